//! [`OutboxError`]: what can go wrong writing to, migrating or reading the outbox.

/// An error of the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The schema name given to [`Outbox::with_schema`](crate::Outbox::with_schema) is unusable.
    #[error(
        "invalid outbox schema {schema:?}: use 1 to 48 lower-case ASCII letters, digits and '_', not starting with a digit"
    )]
    InvalidSchema {
        /// The name given.
        schema: String,
    },
    /// The event breaks WorkOS's rules; the error names every field at fault. Nothing was
    /// written.
    #[error("invalid audit event: {0}")]
    Invalid(audit_core::ValidationErrors),
    /// The idempotency key given in the options is unusable. Nothing was written.
    #[error("invalid idempotency key: {0}")]
    InvalidIdempotencyKey(&'static str),
    /// A setting of the relay or rate limit is unusable.
    #[error("invalid setting {setting}: {message}")]
    InvalidSetting {
        /// The setting at fault.
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A migration applied earlier differs from the one this version of the crate ships.
    #[error(
        "audit outbox migration {version} ({name}) in schema {schema} was changed after it was applied (checksum mismatch)"
    )]
    MigrationChanged {
        /// The schema.
        schema: String,
        /// The migration's version.
        version: i64,
        /// The migration's name.
        name: &'static str,
    },
    /// The database refused or failed a statement.
    #[error("audit outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The event could not be encoded as JSON.
    #[error("could not encode the audit event: {0}")]
    Encode(#[source] serde_json::Error),
    /// A stored row could not be read back.
    #[error("could not decode an audit outbox row: {0}")]
    Decode(#[source] serde_json::Error),
    /// PostgreSQL refused a value of the event (for example a U+0000 character in a string,
    /// which `jsonb` cannot store, SQLSTATE 22P05). `field` is the JSON pointer of the value at
    /// fault (`/metadata/note`), or `/` when it could not be found. Nothing was written; the
    /// statement's error aborted the caller's transaction, as any failed statement does.
    #[error("PostgreSQL refused the audit event's field {field}: {message} (SQLSTATE {code})")]
    Refused {
        /// The JSON pointer of the value at fault.
        field: String,
        /// PostgreSQL's SQLSTATE code.
        code: String,
        /// PostgreSQL's message.
        message: String,
    },
    /// [`OutboxAudit::write_in`](crate::OutboxAudit::write_in) on a request whose audit is
    /// switched off (the adapters' `AuditDisabled`); nothing was written.
    #[error("no audit event written: audit is off for this request")]
    AuditOff,
    /// [`OutboxAudit::write_in`](crate::OutboxAudit::write_in) in a handler that has no
    /// `#[action]`; nothing was written.
    #[error("no audit event written: the handler has no #[action]")]
    NotAnnotated,
    /// [`OutboxAudit::write_in`](crate::OutboxAudit::write_in) called a second time in the same
    /// transaction: the request's event is already in it, and was not written twice.
    #[error("the request's audit event is already written in this transaction")]
    AlreadyWritten,
    /// An audited request had no event to write (see
    /// [`OutboxAudit::write_in`](crate::OutboxAudit::write_in)); nothing was written.
    #[error("no audit event written for this request: {reason}")]
    NotWritten {
        /// Why.
        reason: &'static str,
    },
    /// Relays were started outside a tokio runtime.
    #[error("audit outbox relays must be started inside a tokio runtime")]
    NoRuntime,
}
