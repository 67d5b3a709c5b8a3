//! The request path of examples/axum, with and without audit, as JSON lines for
//! `cargo xtask bench`: `cargo bench -p example-axum --bench request_path -- [throughput] [e2e] [--quick]`.
//! The measurements live in `examples/request_path_bench.rs`, shared with the other framework.

#[path = "../../request_path_bench.rs"]
mod request_path_bench;

fn main() {
    request_path_bench::run(request_path_bench::Subject {
        bin: env!("CARGO_BIN_EXE_example-axum"),
        prefix: "",
    });
}
