//! The minimal program (`src/bin/minimal.rs`, the README's quickstart) runs and records its
//! events, with a WorkOS key and without one.

#[path = "../../minimal_run.rs"]
mod minimal_run;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_workos_key_the_events_reach_it() {
    minimal_run::with_a_workos_key(env!("CARGO_BIN_EXE_minimal-actix")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_it_delivers_to_its_own_testkit() {
    minimal_run::without_a_key(env!("CARGO_BIN_EXE_minimal-actix")).await;
}
