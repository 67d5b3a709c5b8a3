//! `example-actix`: see the crate's README for its routes and settings.

use std::process::ExitCode;

/// Events are allocated on the request's thread and freed on the emitter's: mimalloc frees them
/// without the lock contention of glibc's allocator (see "Benchmarks" in the workspace README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    example_actix::init_tracing();
    let result = match example_actix::Settings::from_env() {
        Ok(settings) => example_actix::run(settings).await,
        Err(e) => Err(e),
    };
    example_actix::exit_code("example-actix", result)
}
