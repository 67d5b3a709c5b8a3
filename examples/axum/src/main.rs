//! `example-axum`: see the crate's README for its routes and settings.

use std::process::ExitCode;

/// A thread-caching allocator. An audit event is allocated on the thread that served the request
/// and freed on the emitter's sender thread; glibc's allocator serializes such frees on a lock
/// shared with the allocating thread, which costs a busy server about a tenth of its request
/// rate (see "Benchmarks" in the workspace README). mimalloc frees them without contention.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match example_axum::Settings::from_env() {
        Ok(settings) => example_axum::run(settings).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example-axum: {e}");
            ExitCode::FAILURE
        }
    }
}
