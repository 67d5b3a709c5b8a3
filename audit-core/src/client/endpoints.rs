//! Endpoints 2 to 10: exports, schemas and actions, retention, configuration, Admin Portal.

use futures_util::Stream;
use reqwest::Method;

use super::pagination::{List, ListOptions};
use super::types::{
    AuditLogAction, AuditLogConfiguration, AuditLogExport, AuditLogSchema, CreateExport, CreateSchema,
    GeneratePortalLink, PortalLink, Retention, RetentionSettings,
};
use super::{Client, segment};
use crate::error::Error;
use crate::event::{Action, OrganizationId};

impl Client {
    // ---- 2, 3. exports ------------------------------------------------------------------------

    /// Starts an export of an organization's events as CSV (`POST /audit_logs/exports`). Poll
    /// [`Client::get_export`] until its state is [`ExportState::Ready`](super::ExportState::Ready).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`range_end`) when `range_end` is before `range_start`;
    /// [`Error::Api`] 400 when nothing matches (`"No audit log events found"`) or the range is
    /// refused (`invalid_audit_log_export_range_date`).
    pub async fn create_export(&self, export: &CreateExport) -> Result<AuditLogExport, Error> {
        if export.range_end < export.range_start {
            return Err(Error::InvalidParameter {
                field: "range_end",
                message: "must not be before range_start".into(),
            });
        }
        let url = self.url(&["audit_logs", "exports"], &[])?;
        self.send_json(Method::POST, url, export).await
    }

    /// Reads an export (`GET /audit_logs/exports/{id}`); a ready export carries a fresh CSV URL.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an empty, `.` or `..` id; [`Error::Api`] 404 for an unknown
    /// export.
    pub async fn get_export(&self, id: &str) -> Result<AuditLogExport, Error> {
        let url = self.url(&["audit_logs", "exports", &segment("export_id", id)?], &[])?;
        self.get_json(url).await
    }

    /// Polls [`Client::get_export`] while the export is pending, waiting 500 ms, then twice as
    /// long each time up to 30 s, for at most `max_wait` in all; answers the export in its last
    /// known state (still [`ExportState::Pending`](super::ExportState::Pending) when `max_wait`
    /// ran out). Each poll is retried like any GET.
    pub async fn wait_for_export(
        &self,
        id: &str,
        max_wait: std::time::Duration,
    ) -> Result<AuditLogExport, Error> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut interval = std::time::Duration::from_millis(500);
        loop {
            let export = self.get_export(id).await?;
            let now = tokio::time::Instant::now();
            if export.state != super::ExportState::Pending || now >= deadline {
                return Ok(export);
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 2).min(std::time::Duration::from_secs(30));
        }
    }

    // ---- 4, 5, 6. schemas and actions ----------------------------------------------------------

    /// Registers a schema for `action` (`POST /audit_logs/actions/{action}/schemas`): creates the
    /// action if needed and answers the new (or unchanged latest) version.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`targets`) when the schema has no target type; [`Error::Api`]
    /// 422 when WorkOS refuses it.
    pub async fn create_schema(
        &self,
        action: &Action,
        schema: &CreateSchema,
    ) -> Result<AuditLogSchema, Error> {
        if schema.targets.is_empty() {
            return Err(Error::InvalidParameter {
                field: "targets",
                message: "a schema needs at least one target type".into(),
            });
        }
        if let Some(i) = schema.targets.iter().position(|t| t.kind.is_empty()) {
            return Err(Error::InvalidParameter {
                field: "targets",
                message: format!("target {i} has an empty type"),
            });
        }
        let url = self.url(
            &[
                "audit_logs",
                "actions",
                &segment("action", action.as_str())?,
                "schemas",
            ],
            &[],
        )?;
        self.send_json(Method::POST, url, schema).await
    }

    /// One page of an action's schema versions (`GET /audit_logs/actions/{action}/schemas`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`limit`) for a limit outside 1..=100; [`Error::Api`] 404 for an
    /// unknown action.
    pub async fn list_schemas(
        &self,
        action: &Action,
        options: &ListOptions,
    ) -> Result<List<AuditLogSchema>, Error> {
        let url = self.url(
            &[
                "audit_logs",
                "actions",
                &segment("action", action.as_str())?,
                "schemas",
            ],
            &options.query()?,
        )?;
        self.get_json(url).await
    }

    /// Every schema version of `action`, page after page, as a stream; stops at the first error
    /// (after that error's retries). `options` sets the page size, order and starting cursor.
    pub fn list_schemas_all(
        &self,
        action: &Action,
        options: ListOptions,
    ) -> impl Stream<Item = Result<AuditLogSchema, Error>> + Send + 'static {
        let client = self.clone();
        let action = action.clone();
        walk(options, move |opts| {
            let client = client.clone();
            let action = action.clone();
            async move { client.list_schemas(&action, &opts).await }
        })
    }

    /// One page of the actions known to WorkOS, each with its latest schema
    /// (`GET /audit_logs/actions`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`limit`) for a limit outside 1..=100.
    pub async fn list_actions(&self, options: &ListOptions) -> Result<List<AuditLogAction>, Error> {
        let url = self.url(&["audit_logs", "actions"], &options.query()?)?;
        self.get_json(url).await
    }

    /// Every action, page after page, as a stream; stops at the first error.
    ///
    /// ```no_run
    /// # async fn run(client: audit_core::Client) -> Result<(), audit_core::Error> {
    /// use audit_core::client::ListOptions;
    /// use futures_util::TryStreamExt;
    ///
    /// let actions: Vec<_> = client.list_actions_all(ListOptions::new().limit(100)).try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn list_actions_all(
        &self,
        options: ListOptions,
    ) -> impl Stream<Item = Result<AuditLogAction, Error>> + Send + 'static {
        let client = self.clone();
        walk(options, move |opts| {
            let client = client.clone();
            async move { client.list_actions(&opts).await }
        })
    }

    // ---- 7, 8. retention ----------------------------------------------------------------------

    /// An organization's retention (`GET /organizations/{id}/audit_logs_retention`).
    pub async fn get_retention(&self, organization: &OrganizationId) -> Result<RetentionSettings, Error> {
        let url = self.url(&retention_path(organization)?, &[])?;
        self.get_json(url).await
    }

    /// Sets an organization's retention (`PUT /organizations/{id}/audit_logs_retention`), in days
    /// or as a named period; answers the retention now in force.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] (`retention_period_in_days`) for a number of days other than 30
    /// or 365 (see [`Retention`]); [`Error::Api`] 404 or 422.
    pub async fn set_retention(
        &self,
        organization: &OrganizationId,
        retention: Retention,
    ) -> Result<RetentionSettings, Error> {
        if let Retention::Days(days) = retention
            && !Retention::is_documented_days(days)
        {
            return Err(Error::InvalidParameter {
                field: "retention_period_in_days",
                message: format!(
                    "{days} is not 30 or 365 (the only values of this form); set other periods with \
                     Retention::Period, e.g. RetentionPeriod::SixMonths"
                ),
            });
        }
        let url = self.url(&retention_path(organization)?, &[])?;
        self.send_json(Method::PUT, url, &retention).await
    }

    // ---- 9. configuration ---------------------------------------------------------------------

    /// An organization's audit-log configuration, including its log stream
    /// (`GET /organizations/{id}/audit_log_configuration`). This is how a program checks that a
    /// log stream is active.
    pub async fn get_audit_log_configuration(
        &self,
        organization: &OrganizationId,
    ) -> Result<AuditLogConfiguration, Error> {
        let url = self.url(
            &[
                "organizations",
                &segment("organization_id", organization.as_str())?,
                "audit_log_configuration",
            ],
            &[],
        )?;
        self.get_json(url).await
    }

    // ---- 10. admin portal ---------------------------------------------------------------------

    /// Generates an Admin Portal link (`POST /portal/generate_link`) for the `audit_logs` or
    /// `log_streams` intent.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a `return_url` or `success_url` that is not an absolute
    /// URL; [`Error::Api`] 400, 403, 404 or 422.
    ///
    /// # Security
    /// The returned link grants access to the organization's portal: give it only to that
    /// organization's admin.
    pub async fn generate_portal_link(&self, request: &GeneratePortalLink) -> Result<PortalLink, Error> {
        for (field, value) in [
            ("return_url", &request.return_url),
            ("success_url", &request.success_url),
        ] {
            if let Some(v) = value
                && url::Url::parse(v).is_err()
            {
                return Err(Error::InvalidParameter {
                    field,
                    message: "must be an absolute URL".into(),
                });
            }
        }
        let url = self.url(&["portal", "generate_link"], &[])?;
        self.send_json(Method::POST, url, request).await
    }
}

fn retention_path(organization: &OrganizationId) -> Result<[String; 3], Error> {
    Ok([
        "organizations".to_owned(),
        segment("organization_id", organization.as_str())?,
        "audit_logs_retention".to_owned(),
    ])
}

/// Walks every page: fetches a page with `fetch`, yields its items, follows `after`.
fn walk<T, F, Fut>(options: ListOptions, fetch: F) -> impl Stream<Item = Result<T, Error>> + Send + 'static
where
    T: Send + 'static,
    F: Fn(ListOptions) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<List<T>, Error>> + Send,
{
    struct State<T, F> {
        next: Option<ListOptions>,
        items: std::vec::IntoIter<T>,
        fetch: F,
    }
    let state = State {
        next: Some(options),
        items: Vec::new().into_iter(),
        fetch,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.items.next() {
                return Some((Ok(item), state));
            }
            let options = state.next.take()?;
            match (state.fetch)(options.clone()).await {
                Ok(page) => {
                    state.next = page.next_page(&options);
                    state.items = page.data.into_iter();
                }
                Err(e) => return Some((Err(e), state)),
            }
        }
    })
}
