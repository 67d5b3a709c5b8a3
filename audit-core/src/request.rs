//! The framework-neutral per-request audit record.
