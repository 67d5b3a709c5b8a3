//! Cursor pagination of the list endpoints, as WorkOS's API reference describes it (`limit`,
//! `before`/`after` cursors, `order`, and `list_metadata` in the answer).

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The sort order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Order {
    /// `normal`: WorkOS's natural order.
    Normal,
    /// `desc`: newest first (WorkOS's default).
    Desc,
    /// `asc`: oldest first.
    Asc,
}

impl Order {
    /// The value as sent in the query.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Desc => "desc",
            Self::Asc => "asc",
        }
    }
}

/// Paging of a list request: page size, cursor and order. Every field is optional.
///
/// ```
/// use audit_core::client::{ListOptions, Order};
/// let opts = ListOptions::new().limit(100).order(Order::Asc);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// Items per page, 1 to 100 (checked locally); WorkOS's default is 10.
    pub limit: Option<u32>,
    /// The cursor to page backwards from (a previous page's `list_metadata.before`).
    pub before: Option<String>,
    /// The cursor to page forwards from (a previous page's `list_metadata.after`).
    pub after: Option<String>,
    /// The order; WorkOS's default is [`Order::Desc`].
    pub order: Option<Order>,
}

impl ListOptions {
    /// The most items one page may hold.
    pub const MAX_LIMIT: u32 = 100;

    /// No options: WorkOS's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the page size (1 to 100).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets the `before` cursor.
    pub fn before(mut self, cursor: impl Into<String>) -> Self {
        self.before = Some(cursor.into());
        self
    }

    /// Sets the `after` cursor.
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.after = Some(cursor.into());
        self
    }

    /// Sets the order.
    pub fn order(mut self, order: Order) -> Self {
        self.order = Some(order);
        self
    }

    /// The query pairs, after checking `limit`.
    pub(super) fn query(&self) -> Result<Vec<(&'static str, String)>, Error> {
        let mut q = Vec::new();
        if let Some(limit) = self.limit {
            if !(1..=Self::MAX_LIMIT).contains(&limit) {
                return Err(Error::InvalidParameter {
                    field: "limit",
                    message: format!("must be between 1 and 100, not {limit}"),
                });
            }
            q.push(("limit", limit.to_string()));
        }
        if let Some(before) = &self.before {
            q.push(("before", before.clone()));
        }
        if let Some(after) = &self.after {
            q.push(("after", after.clone()));
        }
        if let Some(order) = self.order {
            q.push(("order", order.as_str().to_owned()));
        }
        Ok(q)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct List<T> {
    /// The items of this page.
    pub data: Vec<T>,
    /// The cursors around this page.
    #[serde(default)]
    pub list_metadata: ListMetadata,
}

/// The cursors of a page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ListMetadata {
    /// Pass as [`ListOptions::before`] for the previous page; `None` at the start.
    #[serde(default)]
    pub before: Option<String>,
    /// Pass as [`ListOptions::after`] for the next page; `None` at the end.
    #[serde(default)]
    pub after: Option<String>,
}

impl<T> List<T> {
    /// The options for the page after this one, or `None` when this is the last page (no `after`
    /// cursor, or no items).
    pub fn next_page(&self, options: &ListOptions) -> Option<ListOptions> {
        let after = self.list_metadata.after.as_ref()?;
        if self.data.is_empty() {
            return None;
        }
        let mut next = options.clone();
        next.before = None;
        next.after = Some(after.clone());
        Some(next)
    }
}
