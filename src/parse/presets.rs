//! Built-in formats: each is a documented set of defaults over the generic `json` / `regex`
//! mapping, and every field of it can be overridden (or unset with "") in `[source.fields]`.
//! Field sources are lists tried in order, so one preset reads every shape a vendor writes
//! (Entra's Graph objects and its Azure Monitor export, with their different casing).
//!
//! Rule (design.md clarification 20): a preset never maps a gateway-generated ID (nginx
//! `$request_id`, Envoy's generated `x-request-id`, Kong's request id) to `correlation_id` —
//! only an ID both sides log is one. Facts and sources for each vendor: shared/docs/formats.md.

use crate::config::Role;
use crate::model::{Cause, IdpStatus, Stage};

/// How a preset reads a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One JSON object per line; fields are JSON Pointers.
    Json,
    /// A regex with named captures; fields are capture names. The second, with the same
    /// captures in the same order, is tried on a line the first does not match: a slower
    /// pattern that reads what a vendor logs unescaped, kept off the common line's path.
    Regex(&'static str, Option<&'static str>),
}

/// Vendor logic no pointer can express, run after the fields are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derive {
    None,
    /// AWS IAM Identity Center SCIM events in CloudTrail: method, path and status from
    /// `eventName`/`errorCode` (gateway role), or action and status (IdP role).
    CloudTrail,
}

type Fields = &'static [(&'static str, &'static [&'static str])];

/// A built-in format for one role.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub kind: Kind,
    /// The role this entry serves (`None`: any role, the generic formats).
    pub role: Option<Role>,
    pub fields: Fields,
    pub stages: &'static [(Stage, &'static [&'static str])],
    pub status: &'static [(IdpStatus, &'static [&'static str])],
    /// IdP actions that are leaver triggers at the source of truth.
    pub triggers: &'static [&'static str],
    /// IdP actions that stop a leaver clock at the source of truth (the user enabled again).
    pub returns: &'static [&'static str],
    /// IdP actions that are notes on why an operation failed.
    pub causes: &'static [(Cause, &'static [&'static str])],
    pub derive: Derive,
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

/// Where an Okta System Log event names the app and the user: the app's own login first (what
/// the app's operations and its user name joins know), the Okta login after it.
const OKTA_APP: &[&str] = &[
    "/target[type=AppInstance]/alternateId",
    "/target[type=AppInstance]/displayName",
];
const OKTA_USER_LOGIN: &[&str] = &[
    "/target[type=AppUser]/alternateId",
    "/target[type=User]/alternateId",
];
const OKTA_USER_ID: &[&str] = &["/target[type=User]/id"];

/// Okta System Log events that start a leaver clock at the source of truth.
const OKTA_LIFECYCLE_TRIGGERS: &[&str] = &[
    "user.lifecycle.deactivate",
    "user.lifecycle.suspend",
    "application.user_membership.remove",
];

/// Okta System Log events that stop a leaver clock: the user enabled, or assigned, again.
const OKTA_LIFECYCLE_RETURNS: &[&str] = &[
    "user.lifecycle.activate",
    "user.lifecycle.reactivate",
    "user.lifecycle.unsuspend",
    "application.user_membership.add",
];

/// nginx's predefined `combined` format (formats.md §5a), with anything after the user agent
/// tolerated (many sites append fields). `$remote_user` is the authenticated principal.
pub const NGINX_COMBINED_PATTERN: &str = r#"^(?P<remote_addr>\S+) \S+ (?P<principal>\S+) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<body_bytes_sent>\d+|-) "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<user_agent>(?:[^"\\]|\\.)*)"(?:\s.*)?$"#;

/// Envoy's default access log format (formats.md §5b), with any fields appended after it
/// (ignored). `%RESPONSE_CODE%` 0 means no response was sent; `request_id` is Envoy's (possibly
/// generated) `x-request-id`, so it is not mapped.
pub const ENVOY_PATTERN: &str = r#"^\[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"]*)" (?P<status>\d+) (?P<response_flags>\S+) (?P<bytes_received>\d+|-) (?P<bytes_sent>\d+|-) (?P<duration_ms>\d+|-) (?P<upstream_service_time>\S+) "(?P<forwarded_for>[^"]*)" "(?P<user_agent>[^"]*)" "(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream_host>[^"]*)"(?:\s.*)?$"#;

/// [`ENVOY_PATTERN`] for a line it does not match. Envoy's text format does not escape what
/// it logs, and `X-Forwarded-For`, `User-Agent`, `X-Request-Id` and the authority (`Host`)
/// are the client's: a `"` in one must not make the request unreadable (set aside, never
/// judged). Those four are matched up to the first `" "` that leaves a well-formed rest: the
/// upstream host (Envoy's own, `ip:port` or `-`), then the line's end or appended fields.
/// The time, request line, status and duration come before them and are read as logged; a
/// client that writes `" "` into its headers can, with either pattern, shift which of them
/// is read as the authority, so a request's `app` is as trustworthy as the client's `Host`.
/// A third of the strict pattern's speed (criterion), so only for the lines that need it.
pub const ENVOY_UNESCAPED_PATTERN: &str = r#"^\[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"]*)" (?P<status>\d+) (?P<response_flags>\S+) (?P<bytes_received>\d+|-) (?P<bytes_sent>\d+|-) (?P<duration_ms>\d+|-) (?P<upstream_service_time>\S+) "(?P<forwarded_for>.*?)" "(?P<user_agent>.*?)" "(?P<request_id>.*?)" "(?P<authority>.*?)" "(?P<upstream_host>[^"\s]+)"(?:\s.*)?$"#;

const fn generic(name: &'static str, kind: Kind) -> Preset {
    Preset {
        name,
        kind,
        role: None,
        fields: &[],
        stages: GENERIC_STAGES,
        status: GENERIC_STATUS,
        triggers: &[],
        returns: &[],
        causes: &[],
        derive: Derive::None,
    }
}

const fn gateway(name: &'static str, kind: Kind, fields: Fields) -> Preset {
    Preset {
        name,
        kind,
        role: Some(Role::Gateway),
        fields,
        stages: &[],
        status: &[],
        triggers: &[],
        returns: &[],
        causes: &[],
        derive: Derive::None,
    }
}

pub const PRESETS: &[Preset] = &[
    generic("json", Kind::Json),
    generic("regex", Kind::Regex("", None)),
    // Okta System Log (formats.md §2): one LogEvent per line. Okta sends no correlation ID to
    // targets, so operations join on the AppUser login (`user_name`); `transaction.id` names
    // them. The same stream's lifecycle events start leaver clocks.
    Preset {
        name: "okta",
        kind: Kind::Json,
        role: Some(Role::Idp),
        fields: &[
            ("time", &["/published"]),
            ("operation_id", &["/transaction/id"]),
            ("action", &["/eventType"]),
            ("status", &["/outcome/result"]),
            ("error", &["/outcome/reason"]),
            ("app", OKTA_APP),
            ("user_login", OKTA_USER_LOGIN),
            ("user_id", OKTA_USER_ID),
        ],
        stages: &[
            (
                Stage::Joiner,
                &[
                    "application.provision.user.push",
                    "application.provision.user.activate",
                    "application.provision.user.reactivate",
                ],
            ),
            (
                Stage::Mover,
                &[
                    "application.provision.user.push_profile",
                    "application.provision.user.sync",
                    "application.provision.group_membership.add",
                    "application.provision.group_membership.remove",
                    "application.provision.group_membership.update",
                    "application.provision.group_push.push_memberships",
                ],
            ),
            (
                Stage::Leaver,
                &[
                    "application.provision.user.deactivate",
                    "application.provision.user.deprovision",
                ],
            ),
        ],
        status: GENERIC_STATUS,
        triggers: OKTA_LIFECYCLE_TRIGGERS,
        returns: OKTA_LIFECYCLE_RETURNS,
        causes: &[(
            Cause::RateLimited,
            &["application.integration.rate_limit_exceeded"],
        )],
        derive: Derive::None,
    },
    // Microsoft Entra ID provisioning logs (formats.md §1): the Graph provisioningObjectSummary
    // and the Azure Monitor `ProvisioningLogs` export (envelope + capitalised `properties`).
    // Joins on the target identity id (`resource_id`); `changeId` names the operation.
    Preset {
        name: "entra",
        kind: Kind::Json,
        role: Some(Role::Idp),
        fields: &[
            (
                "time",
                &["/activityDateTime", "/properties/activityDateTime", "/time"],
            ),
            (
                "operation_id",
                &["/changeId", "/properties/changeId", "/correlationId"],
            ),
            (
                "action",
                &[
                    "/provisioningAction",
                    "/properties/provisioningAction",
                    "/action",
                    "/properties/action",
                ],
            ),
            (
                "status",
                &[
                    "/provisioningStatusInfo/status",
                    "/properties/provisioningStatusInfo/Status",
                    "/properties/provisioningStatusInfo/status",
                    "/resultType",
                ],
            ),
            (
                "error",
                &[
                    "/provisioningStatusInfo/errorInformation/reason",
                    "/provisioningStatusInfo/errorInfo/reason",
                    "/properties/provisioningStatusInfo/errorInformation/reason",
                    "/properties/provisioningStatusInfo/errorInformation/Reason",
                    "/properties/provisioningStatusInfo/errorInfo/reason",
                    "/resultDescription",
                ],
            ),
            (
                "target_id",
                &[
                    "/targetIdentity/id",
                    "/properties/targetIdentity/Id",
                    "/properties/targetIdentity/id",
                ],
            ),
            (
                "user_id",
                &[
                    "/sourceIdentity/id",
                    "/properties/sourceIdentity/Id",
                    "/properties/sourceIdentity/id",
                ],
            ),
            (
                "user_login",
                &[
                    "/sourceIdentity/details/userPrincipalName",
                    "/properties/sourceIdentity/details/UserPrincipalName",
                    "/properties/sourceIdentity/details/userPrincipalName",
                    "/modifiedProperties[displayName=userName]/newValue",
                ],
            ),
            (
                "app",
                &[
                    "/servicePrincipal/displayName",
                    "/properties/servicePrincipal/Name",
                    "/properties/servicePrincipal/displayName",
                    "/targetSystem/displayName",
                    "/properties/targetSystem/Name",
                ],
            ),
        ],
        stages: &[
            (Stage::Joiner, &["create"]),
            // `other` is how Entra logs an evaluation that changed nothing (usually skipped).
            (Stage::Mover, &["update", "other"]),
            (Stage::Leaver, &["disable", "delete", "stageddelete"]),
        ],
        // Clarification 22: `warning` is the IdP claiming success.
        status: &[
            (IdpStatus::Success, &["success", "warning"]),
            (IdpStatus::Failure, &["failure"]),
            (IdpStatus::Skipped, &["skipped"]),
        ],
        triggers: &[],
        returns: &[],
        causes: &[],
        derive: Derive::None,
    },
    // Okta's lifecycle events read from a stream of their own (a System Log export filtered
    // to them, or another Okta org than the one provisioning): the same events an `okta` IdP
    // source takes as triggers. A user-level event names no app and covers every app the user
    // leaves; an unassignment names its app. A FAILURE outcome did not happen.
    Preset {
        name: "okta",
        kind: Kind::Json,
        role: Some(Role::Trigger),
        fields: &[
            ("time", &["/published"]),
            ("event", &["/eventType"]),
            ("status", &["/outcome/result"]),
            // As the IdP preset reads them: an unassignment opens the (app, AppUser login)
            // pair that the app's operations name.
            ("app", OKTA_APP),
            ("user_login", OKTA_USER_LOGIN),
            ("user_id", OKTA_USER_ID),
        ],
        stages: &[
            (Stage::Leaver, OKTA_LIFECYCLE_TRIGGERS),
            (Stage::Joiner, OKTA_LIFECYCLE_RETURNS),
        ],
        status: GENERIC_STATUS,
        triggers: &[],
        returns: &[],
        causes: &[],
        derive: Derive::None,
    },
    // Microsoft Entra ID's audit log (Graph `directoryAudit`, and the Azure Monitor `AuditLogs`
    // export with its `properties` envelope): "Disable account" or "Delete user" at the source
    // of truth starts the leaver clock, so Entra's ~40-minute provisioning cycle counts in
    // the disable latency. The user is the target of type User: its object id is the
    // provisioning log's `sourceIdentity.id` (a deleted user's UPN gains a prefix, the id
    // does not). No app: one disable covers every app the user is provisioned to.
    Preset {
        name: "entra",
        kind: Kind::Json,
        role: Some(Role::Trigger),
        fields: &[
            (
                "time",
                &["/activityDateTime", "/properties/activityDateTime", "/time"],
            ),
            (
                "event",
                &[
                    "/activityDisplayName",
                    "/properties/activityDisplayName",
                    "/operationName",
                ],
            ),
            ("status", &["/result", "/properties/result"]),
            (
                "user_id",
                &[
                    "/targetResources[type=User]/id",
                    "/properties/targetResources[type=User]/id",
                ],
            ),
            (
                "user_login",
                &[
                    "/targetResources[type=User]/userPrincipalName",
                    "/properties/targetResources[type=User]/userPrincipalName",
                ],
            ),
        ],
        stages: &[
            (Stage::Leaver, &["Disable account", "Delete user"]),
            (Stage::Joiner, &["Enable account", "Restore user"]),
        ],
        status: &[
            (IdpStatus::Success, &["success"]),
            (IdpStatus::Failure, &["failure", "timeout"]),
        ],
        triggers: &[],
        returns: &[],
        causes: &[],
        derive: Derive::None,
    },
    // AWS IAM Identity Center SCIM calls as CloudTrail logs them (formats.md §3): target-side
    // evidence (gateway role), or the IdP side when nothing else is available.
    Preset {
        name: "cloudtrail",
        kind: Kind::Json,
        role: Some(Role::Gateway),
        fields: &[
            ("time", &["/eventTime"]),
            ("event_source", &["/eventSource"]),
            ("event", &["/eventName"]),
            ("error_code", &["/errorCode"]),
            (
                "target_id",
                &[
                    "/requestParameters/id",
                    "/requestParameters/userId",
                    "/requestParameters/groupId",
                ],
            ),
            ("body", &["/requestParameters/httpBody"]),
        ],
        stages: &[],
        status: &[],
        triggers: &[],
        returns: &[],
        causes: &[],
        derive: Derive::CloudTrail,
    },
    Preset {
        name: "cloudtrail",
        kind: Kind::Json,
        role: Some(Role::Idp),
        fields: &[
            ("time", &["/eventTime"]),
            ("event_source", &["/eventSource"]),
            ("action", &["/eventName"]),
            ("error_code", &["/errorCode"]),
            ("error", &["/errorMessage"]),
            ("operation_id", &["/requestID", "/eventID"]),
            (
                "target_id",
                &["/requestParameters/id", "/requestParameters/userId"],
            ),
            ("body", &["/requestParameters/httpBody"]),
        ],
        stages: &[
            (Stage::Joiner, &["CreateUser", "EnableUser"]),
            (
                Stage::Mover,
                &[
                    "PatchUser",
                    "PutUser",
                    "CreateGroup",
                    "PatchGroup",
                    "DeleteGroup",
                ],
            ),
            (Stage::Leaver, &["DeleteUser", "DisableUser"]),
        ],
        status: &[
            (IdpStatus::Success, &["success"]),
            (IdpStatus::Failure, &["failure"]),
        ],
        triggers: &[],
        returns: &[],
        causes: &[],
        derive: Derive::CloudTrail,
    },
    // nginx with `log_format … escape=json` (README shows the log_format line these keys
    // assume). `xrid` is `$http_x_correlation_id`: the caller's ID, not nginx's `$request_id`.
    gateway(
        "nginx_json",
        Kind::Json,
        &[
            ("time", &["/time"]),
            ("correlation_id", &["/xrid"]),
            ("method", &["/method"]),
            ("path", &["/uri"]),
            ("status", &["/status"]),
            ("duration_secs", &["/request_time"]),
            ("principal", &["/remote_user"]),
            ("app", &["/app"]),
            ("location", &["/location"]),
            ("body", &["/request_body"]),
        ],
    ),
    gateway(
        "nginx_combined",
        Kind::Regex(NGINX_COMBINED_PATTERN, None),
        &[
            ("time", &["time"]),
            ("request", &["request"]),
            ("status", &["status"]),
            ("principal", &["principal"]),
        ],
    ),
    gateway(
        "envoy",
        Kind::Regex(ENVOY_PATTERN, Some(ENVOY_UNESCAPED_PATTERN)),
        &[
            ("time", &["time"]),
            ("method", &["method"]),
            ("path", &["path"]),
            ("status", &["status"]),
            ("duration_ms", &["duration_ms"]),
            ("app", &["authority"]),
        ],
    ),
    // Kong file-log / http-log (formats.md §5c). `started_at` is epoch milliseconds; the
    // consumer is who the request was authenticated as. `x-correlation-id` is the caller's.
    gateway(
        "kong",
        Kind::Json,
        &[
            ("time", &["/started_at"]),
            ("correlation_id", &["/request/headers/x-correlation-id"]),
            ("method", &["/request/method"]),
            ("path", &["/request/uri", "/upstream_uri"]),
            ("status", &["/response/status"]),
            ("duration_ms", &["/latencies/request"]),
            ("app", &["/service/name", "/route/name"]),
            (
                "principal",
                &[
                    "/consumer/username",
                    "/consumer/custom_id",
                    "/authenticated_entity/id",
                ],
            ),
            ("location", &["/response/headers/location"]),
        ],
    ),
    // AWS API Gateway access logs in JSON (formats.md §5d), with the keys of AWS's own example
    // format. `requestId` is `x-amzn-RequestId`, which a client may set: both sides can log it.
    gateway(
        "aws_apigw",
        Kind::Json,
        &[
            ("time", &["/requestTimeEpoch", "/requestTime"]),
            ("correlation_id", &["/requestId"]),
            ("method", &["/httpMethod"]),
            ("path", &["/path", "/resourcePath"]),
            ("status", &["/status"]),
            ("duration_ms", &["/responseLatency", "/integrationLatency"]),
            ("principal", &["/principalId", "/user"]),
        ],
    ),
];

/// The preset of a `format` value for a role.
pub fn find(name: &str, role: Role) -> Result<&'static Preset, String> {
    let named: Vec<&Preset> = PRESETS.iter().filter(|p| p.name == name).collect();
    if named.is_empty() {
        return Err(format!(
            "unknown format {name:?} (expected one of: {})",
            names()
        ));
    }
    named
        .iter()
        .find(|p| p.role.is_none_or(|r| r == role))
        .copied()
        .ok_or_else(|| {
            let roles: Vec<&str> = named
                .iter()
                .filter_map(|p| p.role.map(Role::as_str))
                .collect();
            format!(
                "format {name:?} is for role {}, not {:?}",
                roles.join(" or "),
                role.as_str()
            )
        })
}

/// Names for error messages.
pub fn names() -> String {
    let mut names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}
