//! Measures create-event throughput of an in-process testkit over loopback keep-alive
//! connections: `cargo run --release -p audit-testkit --example throughput [CONCURRENCY] [TOTAL]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    // Warm up connections and allocator.
    let _ = audit_testkit::bench::try_create_event_throughput(concurrency, 5_000);
    match audit_testkit::bench::try_create_event_throughput(concurrency, total) {
        Ok(rate) => println!(
            "create-event throughput: {rate:.0} events/s ({total} events, {concurrency} connections)"
        ),
        Err(e) => {
            eprintln!("throughput run failed: {e}");
            std::process::exit(1);
        }
    }
}
