//! `example-axum`: see the crate's README for its routes and settings.

use std::process::ExitCode;

/// Events are allocated on the request's thread and freed on the emitter's: mimalloc frees them
/// without the lock contention of glibc's allocator (see "Benchmarks" in the workspace README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    example_axum::init_tracing();
    let result = match example_axum::Settings::from_env() {
        Ok(settings) => example_axum::run(settings).await,
        Err(e) => Err(e),
    };
    example_axum::exit_code("example-axum", result)
}
