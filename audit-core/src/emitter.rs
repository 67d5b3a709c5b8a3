//! The background emitter.
