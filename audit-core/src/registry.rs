//! Every action the code can emit, known at build time: a link-time registry.
//!
//! Each `#[action(...)]` handler attribute (audit-tower, audit-actix), each
//! [`declare_action!`](crate::declare_action) (for events built by hand) and each
//! [`declare_schema!`](crate::declare_schema) (an [`ActionSchema`] declared in code) adds one
//! entry to a list that the linker assembles (a `linkme` distributed slice: no code runs before
//! `main`, no `unsafe` in the crate that declares, nothing to keep in step by hand). Any binary
//! reads the entries of every crate linked into it:
//!
//! ```
//! audit_core::declare_action!("invoice.refunded", targets("invoice"));
//!
//! let known = audit_core::registry::known_actions();
//! let refunded = known.iter().find(|a| a.action.as_str() == "invoice.refunded").unwrap();
//! assert!(refunded.targets.contains("invoice"));
//! ```
//!
//! What the registry knows of an action ([`KnownAction`]): its name, the target types the
//! annotations name (`targets(team = "id")` for a path parameter, `targets(team)` for a target
//! the handler adds itself), the schema declared in code if any, and where each declaration is.
//! `audit_verify::schemas` compares it with what WorkOS has registered.
//!
//! A crate whose code is not linked into the binary (nothing of it is used) contributes nothing;
//! an app's own test binary links the app's library and so sees its handlers.
//!
//! # `unsafe_code = "forbid"`
//! An entry is a static placed in a linker section. The declaring macros are defined here, so in
//! the crates that use them (an app, the adapters' handlers) that static comes from an external
//! macro, which the `unsafe_code` lint does not look into: an app that forbids unsafe code can
//! declare actions. (audit-core itself, which forbids it too, declares none.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::event::Action;
use crate::schema::ActionSchema;

/// Where a declaration is in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct Origin {
    /// `module_path!()` of the declaration (`example_axum::handlers`).
    pub module: &'static str,
    /// `file!()`.
    pub file: &'static str,
    /// `line!()`.
    pub line: u32,
}

impl Origin {
    /// An origin (used by the generated code: `Origin::new(module_path!(), file!(), line!())`).
    pub const fn new(module: &'static str, file: &'static str, line: u32) -> Self {
        Self { module, file, line }
    }

    /// The crate the declaration is in (the first segment of its module path, `example_axum`).
    pub fn crate_name(&self) -> &'static str {
        self.module.split("::").next().unwrap_or(self.module)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One `#[action(...)]` annotation or [`declare_action!`](crate::declare_action).
#[derive(Debug)]
#[non_exhaustive]
pub struct DeclaredAction {
    /// The action's name (checked at compile time by the declaring macro).
    pub action: &'static str,
    /// The target types the declaration names.
    pub targets: &'static [&'static str],
    /// Where it is.
    pub origin: Origin,
    /// Declared by a handler annotation (its events are built by the adapter, which adds its
    /// own metadata such as `outcome`), not by [`declare_action!`](crate::declare_action).
    pub handler: bool,
}

impl DeclaredAction {
    /// An entry for an event built by hand (used by [`declare_action!`](crate::declare_action)).
    pub const fn new(action: &'static str, targets: &'static [&'static str], origin: Origin) -> Self {
        Self {
            action,
            targets,
            origin,
            handler: false,
        }
    }

    /// An entry for a handler annotation (used by the code `#[action]` generates).
    pub const fn handler(action: &'static str, targets: &'static [&'static str], origin: Origin) -> Self {
        Self {
            action,
            targets,
            origin,
            handler: true,
        }
    }
}

/// One [`declare_schema!`](crate::declare_schema): a function building an [`ActionSchema`].
#[derive(Debug)]
#[non_exhaustive]
pub struct DeclaredSchema {
    /// Builds the schema (called when the registry is read).
    pub build: fn() -> ActionSchema,
    /// Where it is.
    pub origin: Origin,
}

impl DeclaredSchema {
    /// An entry (used by the generated code).
    pub const fn new(build: fn() -> ActionSchema, origin: Origin) -> Self {
        Self { build, origin }
    }
}

/// The items the declaring macros expand to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use super::{ACTIONS, DeclaredAction, DeclaredSchema, Origin, SCHEMAS};
    pub use crate::event::Action;
    pub use linkme;
}

/// Every action annotation and declaration linked into this binary.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static ACTIONS: [DeclaredAction];

/// Every schema declared in code linked into this binary.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static SCHEMAS: [DeclaredSchema];

/// Every action annotation and [`declare_action!`](crate::declare_action) linked into this
/// binary, in no particular order.
pub fn declared_actions() -> &'static [DeclaredAction] {
    &ACTIONS
}

/// Every schema declared in code ([`declare_schema!`](crate::declare_schema)) linked into this
/// binary, with where it is declared, sorted by action. Pass the schemas to
/// [`SchemaRegistry::sync`](crate::SchemaRegistry::sync) at start-up to register them.
pub fn declared_schemas() -> Vec<(ActionSchema, Origin)> {
    let mut all: Vec<_> = SCHEMAS.iter().map(|s| ((s.build)(), s.origin)).collect();
    all.sort_by(|a, b| a.0.action.as_str().cmp(b.0.action.as_str()).then(a.1.cmp(&b.1)));
    all
}

/// What the code says about one action, merged from every declaration of it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KnownAction {
    /// The action.
    pub action: Action,
    /// The target types the code sends: those the annotations name, and those of the schema
    /// declared in code.
    pub targets: BTreeSet<String>,
    /// The schema declared in code, if any (the first one when several crates declare it).
    pub schema: Option<ActionSchema>,
    /// Where the schema is declared.
    pub schema_origin: Option<Origin>,
    /// Where the action is annotated or declared (sorted).
    pub origins: Vec<Origin>,
    /// Some handler annotation names it: the adapter builds (some of) its events.
    pub handler: bool,
}

impl KnownAction {
    /// The first place the action is named, for messages.
    pub fn origin(&self) -> Option<Origin> {
        self.origins.first().copied().or(self.schema_origin)
    }
}

/// Every action this binary can emit, sorted by name: the annotations, the declared actions and
/// the declared schemas, merged per action.
pub fn known_actions() -> Vec<KnownAction> {
    merge(ACTIONS.iter(), declared_schemas())
}

/// [`known_actions`] of the crates named (as in `module_path!()`: `example_axum`), for a binary
/// that links several apps.
pub fn known_actions_in(crates: &[&str]) -> Vec<KnownAction> {
    merge(
        ACTIONS.iter().filter(|a| crates.contains(&a.origin.crate_name())),
        declared_schemas()
            .into_iter()
            .filter(|(_, o)| crates.contains(&o.crate_name())),
    )
}

fn merge<'a>(
    actions: impl Iterator<Item = &'a DeclaredAction>,
    schemas: impl IntoIterator<Item = (ActionSchema, Origin)>,
) -> Vec<KnownAction> {
    fn slot(by_name: &mut BTreeMap<String, KnownAction>, action: Action) -> &mut KnownAction {
        by_name.entry(action.to_string()).or_insert_with(|| KnownAction {
            action,
            targets: BTreeSet::new(),
            schema: None,
            schema_origin: None,
            origins: Vec::new(),
            handler: false,
        })
    }
    let mut by_name: BTreeMap<String, KnownAction> = BTreeMap::new();
    for declared in actions {
        // The declaring macros check the name at compile time; an entry made by other means
        // with an invalid name is left out rather than panicking.
        let Ok(action) = Action::new(declared.action) else {
            continue;
        };
        let known = slot(&mut by_name, action);
        known
            .targets
            .extend(declared.targets.iter().map(|t| (*t).to_owned()));
        known.origins.push(declared.origin);
        known.handler |= declared.handler;
    }
    for (schema, origin) in schemas {
        let known = slot(&mut by_name, schema.action.clone());
        known
            .targets
            .extend(schema.schema.targets.iter().map(|t| t.kind.clone()));
        if known.schema.is_none() {
            known.schema = Some(schema);
            known.schema_origin = Some(origin);
        }
    }
    by_name
        .into_values()
        .map(|mut k| {
            k.origins.sort();
            k.origins.dedup();
            k
        })
        .collect()
}

/// Declares an action that code emits without a handler annotation (an event built by hand
/// and passed to [`Emitter::emit`](crate::Emitter::emit)), with the target types it sends, so
/// that the [registry](crate::registry) knows it. The name is checked at compile time.
///
/// ```
/// audit_core::declare_action!("invoice.refunded", targets("invoice", "user"));
/// audit_core::declare_action!("report.exported");
/// ```
#[macro_export]
macro_rules! declare_action {
    ($action:literal $(, targets($($kind:literal),* $(,)?))? $(,)?) => {
        const _: () = {
            const _: $crate::registry::__private::Action =
                $crate::registry::__private::Action::from_static($action);
            #[$crate::registry::__private::linkme::distributed_slice($crate::registry::__private::ACTIONS)]
            #[linkme(crate = $crate::registry::__private::linkme)]
            static DECLARED: $crate::registry::__private::DeclaredAction =
                $crate::registry::__private::DeclaredAction::new(
                    $action,
                    &[$($($kind),*)?],
                    $crate::registry::__private::Origin::new(::core::module_path!(), ::core::file!(), ::core::line!()),
                );
        };
    };
}

/// Registers an [`ActionSchema`] declared in code with the [registry](crate::registry): either a
/// function path (`fn() -> ActionSchema`) or a function defined in place.
///
/// ```
/// use audit_core::{Action, ActionSchema};
/// use serde_json::json;
///
/// audit_core::declare_schema! {
///     /// `invoice.paid`: one invoice, its amount in the metadata.
///     pub fn invoice_paid() -> ActionSchema {
///         ActionSchema::new(Action::from_static("invoice.paid"))
///             .target("invoice")
///             .metadata(json!({"type": "object", "properties": {"amount": {"type": "integer"}}}))
///     }
/// }
///
/// fn team_created() -> ActionSchema {
///     ActionSchema::new(Action::from_static("team.created")).target("team")
/// }
/// audit_core::declare_schema!(team_created);
///
/// let schemas = audit_core::registry::declared_schemas();
/// assert!(schemas.iter().any(|(s, _)| s.action.as_str() == "invoice.paid"));
/// ```
#[macro_export]
macro_rules! declare_schema {
    ($(#[$meta:meta])* $vis:vis fn $name:ident() -> $ret:ty $body:block) => {
        $(#[$meta])* $vis fn $name() -> $ret $body
        $crate::declare_schema!($name);
    };
    ($build:path) => {
        const _: () = {
            #[$crate::registry::__private::linkme::distributed_slice($crate::registry::__private::SCHEMAS)]
            #[linkme(crate = $crate::registry::__private::linkme)]
            static DECLARED: $crate::registry::__private::DeclaredSchema =
                $crate::registry::__private::DeclaredSchema::new(
                    $build,
                    $crate::registry::__private::Origin::new(::core::module_path!(), ::core::file!(), ::core::line!()),
                );
        };
    };
}
