#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adapter;
pub mod client;
pub mod client_ip;
pub mod config;
pub mod delivery;
pub mod emitter;
pub mod error;
pub mod event;
pub mod export;
pub mod registry;
pub mod request;
pub mod retry;
pub mod schema;
pub mod sync;
pub mod validate;

pub use error::{ApiError, ApiFieldError, Error};
pub use event::{
    Action, Actor, Context, CreateEvent, Event, InvalidValue, Metadata, MetadataValue, OrganizationId, Target,
};
pub use retry::RetryPolicy;
pub use validate::{FieldError, FieldErrorKind, ValidationErrors};
// client re-exports
pub use client::{Client, ClientBuilder, CreateEventOptions};
pub use config::AuditSettings;
// emitter re-exports
pub use emitter::{
    DeadLetter, DeadLetterReason, EmitError, EmitOptions, EmitReceipt, Emitter, EmitterBuilder,
    JsonlDeadLetters, MemorySink, Overflow, ShutdownReport, Sink, Stats,
};
// client_ip re-exports
pub use client_ip::{ClientIp, ClientIpConfig, ForwardedHeader, InvalidTrustedProxy};
// request re-exports
// export re-exports
pub use export::{EventReader, EventStream, ReadError};
// schema re-exports
pub use schema::{ActionSchema, SchemaError, SchemaRegistry};
