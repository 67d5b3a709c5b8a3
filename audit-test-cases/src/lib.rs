//! Case tables shared by the test suites of audit-core, audit-tower and audit-actix.
//!
//! Both adapters run the same framework-neutral cases through their middleware, so that a rule
//! fixed in one cannot silently differ in the other. This crate is a dev-dependency only; it is
//! not published and not part of any crate's API.

pub mod cancelled;
pub mod capture;
pub mod client_ip;
pub mod logs;
pub mod split;
