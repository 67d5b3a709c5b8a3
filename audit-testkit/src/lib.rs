#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api;
pub mod bench;
mod csv_export;
#[cfg(feature = "sqlite")]
mod db;
mod export_query;
pub mod fault;
mod kit;
mod model;
mod redact;
mod security;
mod server;
#[cfg(feature = "stand-ins")]
pub mod stand_ins;
mod state;
pub mod streams;
mod util;
mod validate;
mod viewer;

pub use fault::{FaultAction, FaultRule, FaultWhen};
pub use kit::{DEFAULT_MAX_EXPORT_BYTES, DEFAULT_MAX_EXPORTS, Error, TestKit, TestKitBuilder};
pub use model::{RecordedRequest, StoredEvent};
pub use streams::{Destination, StreamState, StreamStatus};

/// The CSV columns an export always has, in order; per-target columns
/// (`target_id_N`, `target_type_N`, `target_name_N`, `target_metadata_N`) follow.
pub const EXPORT_CSV_FIXED_COLUMNS: [&str; 9] = csv_export::FIXED_COLUMNS;
