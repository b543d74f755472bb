//! Built-in formats: each is a documented set of defaults over the generic `json` / `regex`
//! mapping, and every field of it can be overridden (or unset with "") in `[source.fields]`.
//!
//! Rule (design.md clarification 20): a preset never maps a gateway-generated ID (nginx
//! `$request_id`, Kong's request id) to `correlation_id` — only an ID both sides log is one.

use crate::config::Role;
use crate::model::{IdpStatus, Stage};

/// How a preset reads a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One JSON object per line; fields are JSON Pointers.
    Json,
    /// A regex with named captures; fields are capture names.
    Regex(&'static str),
}

/// A built-in format.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub kind: Kind,
    /// The roles it is meant for (empty = any).
    pub roles: &'static [Role],
    pub fields: &'static [(&'static str, &'static str)],
    pub stages: &'static [(Stage, &'static [&'static str])],
    pub status: &'static [(IdpStatus, &'static [&'static str])],
}

/// Stage words for generic IdP logs (design.md "Stage"), matched ignoring case.
const GENERIC_STAGES: &[(Stage, &[&str])] = &[
    (
        Stage::Joiner,
        &["create", "provision", "rehire", "reactivate", "activate"],
    ),
    (
        Stage::Mover,
        &[
            "update",
            "profile_push",
            "push_profile",
            "group_membership_change",
            "membership_change",
            "rename",
            "move",
        ],
    ),
    (
        Stage::Leaver,
        &["disable", "deactivate", "suspend", "delete", "deprovision"],
    ),
];

const GENERIC_STATUS: &[(IdpStatus, &[&str])] = &[
    (
        IdpStatus::Success,
        &["success", "succeeded", "ok", "warning"],
    ),
    (IdpStatus::Failure, &["failure", "failed", "error"]),
    (IdpStatus::Skipped, &["skipped", "skip"]),
];

/// nginx's predefined `combined` format (formats.md §5a), with anything after the user agent
/// tolerated (many sites append fields). `$remote_user` is the authenticated principal.
pub const NGINX_COMBINED_PATTERN: &str = r#"^(?P<remote_addr>\S+) \S+ (?P<principal>\S+) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<body_bytes_sent>\d+|-) "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<user_agent>(?:[^"\\]|\\.)*)"(?:\s.*)?$"#;

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "json",
        kind: Kind::Json,
        roles: &[],
        fields: &[],
        stages: GENERIC_STAGES,
        status: GENERIC_STATUS,
    },
    Preset {
        name: "regex",
        kind: Kind::Regex(""),
        roles: &[],
        fields: &[],
        stages: GENERIC_STAGES,
        status: GENERIC_STATUS,
    },
    // nginx with `log_format … escape=json` (README shows the log_format line these keys
    // assume). `xrid` is `$http_x_request_id`: the caller's ID, not nginx's own `$request_id`.
    Preset {
        name: "nginx_json",
        kind: Kind::Json,
        roles: &[Role::Gateway],
        fields: &[
            ("time", "/time"),
            ("correlation_id", "/xrid"),
            ("method", "/method"),
            ("path", "/uri"),
            ("status", "/status"),
            ("duration_secs", "/request_time"),
            ("principal", "/remote_user"),
            ("app", "/app"),
            ("location", "/location"),
            ("body", "/request_body"),
        ],
        stages: &[],
        status: &[],
    },
    Preset {
        name: "nginx_combined",
        kind: Kind::Regex(NGINX_COMBINED_PATTERN),
        roles: &[Role::Gateway],
        fields: &[
            ("time", "time"),
            ("request", "request"),
            ("status", "status"),
            ("principal", "principal"),
        ],
        stages: &[],
        status: &[],
    },
];

/// The preset of a `format` value.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Names for error messages.
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}
