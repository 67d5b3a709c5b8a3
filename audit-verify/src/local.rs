//! The checklist against an audit-testkit started in this process (feature `local`): an
//! organization, a local key and client id, an active log stream, schemas required and a schema
//! registered for the action, so that every check runs, and passes when this workspace's client
//! and audit-testkit agree. `cargo xtask verify --local` is this.
//!
//! ```no_run
//! use audit_verify::local::{LOCAL_ORGANIZATION_ID, LocalWorkos};
//! use audit_verify::{DEFAULT_ACTION, Verifier, VerifyOptions};
//!
//! # async fn run() -> Result<(), audit_verify::local::LocalError> {
//! let local = LocalWorkos::start(LOCAL_ORGANIZATION_ID, DEFAULT_ACTION).await?;
//! let report = Verifier::new(local.configure(VerifyOptions::new())).run().await;
//! assert!(report.passed(), "{report}");
//! # Ok(()) }
//! ```
//!
//! The feature adds audit-testkit (an HTTP server with axum, hyper, maud and jsonschema) to the
//! build; without it this crate needs none of them.

use std::time::Duration;

use audit_core::client::{Client, CreateSchema, SchemaTarget};
use audit_core::{Action, OrganizationId};
use audit_testkit::TestKit;
use serde_json::json;

use crate::{ENV_API_KEY, ENV_CLIENT_ID, ENV_ORGANIZATION_ID, VerifyOptions};

/// The organization of a local run unless another is given.
pub const LOCAL_ORGANIZATION_ID: &str = "org_01JVERFYXTASK0CAMRGN000000";

/// The key the local audit-testkit accepts (it is not a WorkOS key).
pub const LOCAL_API_KEY: &str = "sk_test_audit_testkit_local_verify";

/// The client id of a local run, so that its check runs too.
pub const LOCAL_CLIENT_ID: &str = "client_01JVERFYXTASK0CAMRGN000000";

/// Why the local audit-testkit could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// The organization id is not one WorkOS would accept.
    #[error("organization id: {0}")]
    Organization(String),
    /// audit-testkit did not start.
    #[error("could not start audit-testkit: {0}")]
    Start(String),
    /// The action's schema could not be registered.
    #[error("registering a schema in audit-testkit: {0}")]
    Schema(String),
}

/// An audit-testkit in this process, set up for the checklist; stops when dropped.
#[derive(Debug)]
pub struct LocalWorkos {
    kit: TestKit,
    organization_id: String,
}

impl LocalWorkos {
    /// Starts audit-testkit with `organization_id`, [`LOCAL_API_KEY`], an active Datadog log
    /// stream, schemas required and a schema for `action` with a required string property
    /// `check` (an action that is not valid is left to the checks to report).
    ///
    /// # Errors
    /// [`LocalError`]: an organization id that is not valid, a testkit that did not start, a
    /// schema it did not take.
    pub async fn start(organization_id: &str, action: &str) -> Result<Self, LocalError> {
        OrganizationId::new(organization_id).map_err(|e| LocalError::Organization(e.to_string()))?;
        let kit = TestKit::builder()
            .org(organization_id)
            .api_key(LOCAL_API_KEY)
            .require_schemas(true)
            .log_stream("Datadog", "active")
            .export_delay(Duration::from_millis(200))
            .start()
            .await
            .map_err(|e| LocalError::Start(e.to_string()))?;
        if let Ok(action) = Action::new(action) {
            let client = Client::builder()
                .api_key(LOCAL_API_KEY)
                .base_url(kit.url())
                .build()
                .map_err(|e| LocalError::Schema(e.to_string()))?;
            let schema = CreateSchema::new([SchemaTarget::new("verification")]).metadata(json!({
                "type": "object",
                "properties": {"check": {"type": "string"}, "attempt": {"type": "integer"}},
                "required": ["check"]
            }));
            client
                .create_schema(&action, &schema)
                .await
                .map_err(|e| LocalError::Schema(e.to_string()))?;
        }
        Ok(Self {
            kit,
            organization_id: organization_id.to_owned(),
        })
    }

    /// The testkit's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.kit.url()
    }

    /// The testkit, to inspect what the checks sent.
    pub fn testkit(&self) -> &TestKit {
        &self.kit
    }

    /// `options` pointed at this testkit: its URL, the local key, organization and client id
    /// (set after, so over, any given), exports polled every 100 ms, not in CI.
    pub fn configure(&self, options: VerifyOptions) -> VerifyOptions {
        options
            .env_var(ENV_API_KEY, LOCAL_API_KEY)
            .env_var(ENV_ORGANIZATION_ID, self.organization_id.clone())
            .env_var(ENV_CLIENT_ID, LOCAL_CLIENT_ID)
            .base_url(self.kit.url())
            .export_poll_interval(Duration::from_millis(100))
            .ci(false)
    }
}
