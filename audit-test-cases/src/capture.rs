//! A framework-neutral table of capture cases, shared by the adapters' test suites: the user
//! agent and its bound, the request id, method and route of request metadata, and where the actor
//! and the organization come from when several sources set them.
//!
//! audit-tower and audit-actix each serve [`CASES`] through the same app shape: an outer auth
//! layer puts [`Case::outer`] into the request extensions, the middleware (configured with
//! [`Case::max_user_agent_len`], [`Case::request_metadata`] and resolvers returning
//! [`Case::resolved`]) captures the request, an auth layer inside the middleware puts
//! [`Case::inner`] into the extensions, and the handler, annotated `#[action("team.created")]` on
//! the route `/teams/{id}`, sets [`Case::handler`] through `AuditCtx`. [`Case::check`] then
//! compares what the emitter received with [`Case::expected`].

use audit_core::{CreateEvent, MetadataValue};

/// The route pattern of the cases' handler.
pub const ROUTE: &str = "/teams/{id}";
/// The path the cases request.
pub const PATH: &str = "/teams/team_7";
/// The action of the cases' handler.
pub const ACTION: &str = "team.created";

const LONG_REQUEST_ID: &str = "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr";
const CUT_REQUEST_ID: &str = "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr…[truncated crc32:ebdf4f36]";

/// An actor and an organization, either of which a source may leave unset.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parties {
    /// The actor's id (of type `user`).
    pub actor: Option<&'static str>,
    /// The organization id.
    pub organization: Option<&'static str>,
}

const NONE: Parties = Parties {
    actor: None,
    organization: None,
};

const fn both(actor: &'static str, organization: &'static str) -> Parties {
    Parties {
        actor: Some(actor),
        organization: Some(organization),
    }
}

/// What the emitted event holds; `None` in [`Case::expected`] when no event is due.
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    /// The actor's id.
    pub actor: &'static str,
    /// The organization.
    pub organization: &'static str,
    /// `context.user_agent`.
    pub user_agent: Option<&'static str>,
    /// The metadata `request_id`.
    pub request_id: Option<&'static str>,
}

/// One capture case.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// A short unique name, for assertion messages.
    pub name: &'static str,
    /// The request's headers, in order.
    pub headers: &'static [(&'static str, &'static str)],
    /// The middleware's user-agent bound (`None`: the default).
    pub max_user_agent_len: Option<usize>,
    /// The middleware's request metadata switch.
    pub request_metadata: bool,
    /// What an auth layer outside the middleware puts into the request extensions.
    pub outer: Parties,
    /// What the middleware's resolvers find.
    pub resolved: Parties,
    /// What an auth layer inside the middleware puts into the request extensions.
    pub inner: Parties,
    /// What the handler sets through `AuditCtx`.
    pub handler: Parties,
    /// The event, or `None` when the request emits nothing.
    pub expected: Option<Expected>,
}

impl Case {
    /// Compares what the emitter received for this case (`None`: nothing) with
    /// [`Case::expected`], naming the case and the field on a difference.
    pub fn check(&self, emitted: Option<&CreateEvent>) -> Result<(), String> {
        let name = self.name;
        let (expected, emitted) = match (self.expected, emitted) {
            (None, None) => return Ok(()),
            (Some(_), None) => return Err(format!("{name}: no event")),
            (None, Some(e)) => return Err(format!("{name}: unexpected event {e:?}")),
            (Some(expected), Some(emitted)) => (expected, emitted),
        };
        let event = &emitted.event;
        let metadata = |key: &str| event.metadata.as_ref().and_then(|m| m.get(key).cloned());
        let text = |value: Option<&str>| value.map(MetadataValue::from);
        let found = [
            ("action", Some(event.action.as_str()) == Some(ACTION)),
            ("actor", event.actor.id == expected.actor),
            (
                "organization",
                emitted.organization_id.as_str() == expected.organization,
            ),
            (
                "user_agent",
                event.context.user_agent.as_deref() == expected.user_agent,
            ),
            ("request_id", metadata("request_id") == text(expected.request_id)),
            (
                "http_method",
                metadata("http_method") == text(self.request_metadata.then_some("POST")),
            ),
            (
                "http_route",
                metadata("http_route") == text(self.request_metadata.then_some(ROUTE)),
            ),
        ];
        match found.iter().find(|(_, same)| !same) {
            None => Ok(()),
            Some((field, _)) => Err(format!(
                "{name}: {field} differs: expected {expected:?}, emitted {emitted:?}"
            )),
        }
    }
}

const BASE: Case = Case {
    name: "",
    headers: &[],
    max_user_agent_len: None,
    request_metadata: false,
    outer: both("user_outer", "org_outer"),
    resolved: NONE,
    inner: NONE,
    handler: NONE,
    expected: Some(Expected {
        actor: "user_outer",
        organization: "org_outer",
        user_agent: None,
        request_id: None,
    }),
};

const fn expect(actor: &'static str, organization: &'static str) -> Option<Expected> {
    Some(Expected {
        actor,
        organization,
        user_agent: None,
        request_id: None,
    })
}

/// The shared cases.
pub static CASES: &[Case] = &[
    Case {
        name: "extensions of an outer auth layer",
        ..BASE
    },
    Case {
        name: "resolvers when the extensions hold nothing",
        outer: NONE,
        resolved: both("user_resolved", "org_resolved"),
        expected: expect("user_resolved", "org_resolved"),
        ..BASE
    },
    Case {
        name: "extensions win over resolvers",
        resolved: both("user_resolved", "org_resolved"),
        ..BASE
    },
    Case {
        name: "actor from a resolver, organization from the extensions",
        outer: Parties {
            actor: None,
            organization: Some("org_outer"),
        },
        resolved: both("user_resolved", "org_resolved"),
        expected: expect("user_resolved", "org_outer"),
        ..BASE
    },
    Case {
        name: "the handler wins over every other source",
        resolved: both("user_resolved", "org_resolved"),
        inner: both("user_inner", "org_inner"),
        handler: both("user_handler", "org_handler"),
        expected: expect("user_handler", "org_handler"),
        ..BASE
    },
    Case {
        name: "an inner auth layer fills what capture left unset",
        outer: NONE,
        inner: both("user_inner", "org_inner"),
        expected: expect("user_inner", "org_inner"),
        ..BASE
    },
    Case {
        name: "an inner auth layer does not replace what capture found",
        outer: Parties {
            actor: Some("user_outer"),
            organization: None,
        },
        inner: both("user_inner", "org_inner"),
        expected: expect("user_outer", "org_inner"),
        ..BASE
    },
    Case {
        name: "no actor anywhere: skipped",
        outer: Parties {
            actor: None,
            organization: Some("org_outer"),
        },
        expected: None,
        ..BASE
    },
    Case {
        name: "no organization anywhere: skipped",
        outer: Parties {
            actor: Some("user_outer"),
            organization: None,
        },
        expected: None,
        ..BASE
    },
    Case {
        name: "user agent kept",
        headers: &[("user-agent", "curl/8.5.0")],
        expected: Some(Expected {
            user_agent: Some("curl/8.5.0"),
            ..BASE_EXPECTED
        }),
        ..BASE
    },
    Case {
        name: "user agent cut to the configured bound, marked with the original's CRC-32",
        headers: &[("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36")],
        max_user_agent_len: Some(40),
        expected: Some(Expected {
            user_agent: Some("Mozilla/5.0…[truncated crc32:a6052068]"),
            ..BASE_EXPECTED
        }),
        ..BASE
    },
    Case {
        name: "request id, method and route with request metadata",
        headers: &[("x-request-id", "req-42"), ("user-agent", "ua")],
        request_metadata: true,
        expected: Some(Expected {
            user_agent: Some("ua"),
            request_id: Some("req-42"),
            ..BASE_EXPECTED
        }),
        ..BASE
    },
    Case {
        name: "no request id without request metadata",
        headers: &[("x-request-id", "req-42")],
        ..BASE
    },
    Case {
        name: "request metadata without a request id",
        request_metadata: true,
        ..BASE
    },
    Case {
        name: "request id cut to what WorkOS accepts",
        headers: &[("x-request-id", LONG_REQUEST_ID)],
        request_metadata: true,
        expected: Some(Expected {
            request_id: Some(CUT_REQUEST_ID),
            ..BASE_EXPECTED
        }),
        ..BASE
    },
];

const BASE_EXPECTED: Expected = Expected {
    actor: "user_outer",
    organization: "org_outer",
    user_agent: None,
    request_id: None,
};
