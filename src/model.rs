//! The vocabulary shared by every stage of the pipeline: records parsed from the two sides,
//! and the stage / outcome / cause enums whose names are part of the report and metric contract.

use crate::time::Ts;
use serde::{Deserialize, Serialize};

/// The hash map of the core's per-key state: ahash with per-process random keys, so crafted
/// IDs in a log cannot force collisions, at a fraction of SipHash's cost.
pub type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// Gives an app its name under the config now, where that differs: `Some(new name)`
/// ([`crate::config::AppsConfig::renamer`]).
pub type Rename<'a> = &'a dyn Fn(&str) -> Option<String>;

/// [`rename_app`] for an app kept lowercased (the join's pool and learned names compare
/// names folded): it stays folded, and a canonical name that differs only in case is no
/// rename (helper-63: with the config unchanged, every restart gave them the canonical
/// name's capitals, and nothing joined them any more).
pub fn rename_folded_app(app: &mut String, rename: Rename<'_>) -> bool {
    match rename(app).map(|new| fold_case(&new).into_owned()) {
        Some(new) if new != *app => {
            *app = new;
            true
        }
        _ => false,
    }
}

/// Renames an app by `rename`: whether it changed.
pub fn rename_app(app: &mut String, rename: Rename<'_>) -> bool {
    match rename(app) {
        Some(new) => {
            *app = new;
            true
        }
        None => false,
    }
}

/// [`rename_app`] for an app that may be absent.
pub fn rename_some_app(app: &mut Option<String>, rename: Rename<'_>) -> bool {
    app.as_mut().is_some_and(|app| rename_app(app, rename))
}

/// The case-folded form of a name used as a key (logins, user IDs, app aliases). Text already
/// folded (the common case: lowercase ASCII) is borrowed; other ASCII is folded without
/// Unicode's per-character tables.
pub fn fold_case(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.is_ascii() {
        text.to_lowercase().into()
    } else if crate::swar::has_ascii_uppercase(text.as_bytes()) {
        text.to_ascii_lowercase().into()
    } else {
        text.into()
    }
}

/// `str::trim`, skipping Unicode's tables when the text starts and ends with visible ASCII
/// (every whitespace character is either ASCII up to a space or outside ASCII).
pub fn trim(text: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(|b| (b'!'..=b'~').contains(b));
    if visible(text.as_bytes().first()) && visible(text.as_bytes().last()) {
        text
    } else {
        text.trim()
    }
}

/// Pushes onto a Vec that usually stays short, growing it one element at a time up to four:
/// a first `push` reserves room for four, and most of the core's per-key lists (a pending
/// operation's records, a login's disabled intervals) hold one or two for their whole life.
pub fn push_small<T>(items: &mut Vec<T>, item: T) {
    if items.len() == items.capacity() && items.len() < 4 {
        items.reserve_exact(1);
    }
    items.push(item);
}

/// Appends to a boxed slice, growing it by exactly one: for lists that are short, many, and
/// rarely grow (a pending operation's records).
pub fn push_boxed<T>(items: &mut Box<[T]>, item: T) {
    if items.is_empty() {
        // The usual case (one record): an allocation, not a reallocation from nothing.
        *items = Box::new([item]);
        return;
    }
    let mut vec = std::mem::take(items).into_vec();
    vec.reserve_exact(1);
    vec.push(item);
    *items = vec.into_boxed_slice();
}

/// Up to `N` optional strings in one allocation, back to back: for what waits in the core by
/// the million (a timeline entry) and would otherwise own a `String` per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts<const N: usize> {
    text: Box<str>,
    /// Where each part ends in `text`.
    ends: [u32; N],
    /// Bit `i` set: part `i` is present (an absent part is empty).
    present: u8,
}

impl<const N: usize> Texts<N> {
    pub fn new(parts: [Option<&str>; N]) -> Texts<N> {
        const { assert!(N <= 8, "one presence bit per part") };
        let mut text = String::with_capacity(parts.iter().flatten().map(|p| p.len()).sum());
        let (mut ends, mut present) = ([0u32; N], 0u8);
        for (i, part) in parts.iter().enumerate() {
            if let Some(part) = part {
                text.push_str(part);
                present |= 1 << i;
            }
            // Parts come from log lines, far below 4 GiB; saturating keeps slicing in bounds.
            ends[i] = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        Texts {
            text: text.into_boxed_str(),
            ends,
            present,
        }
    }

    /// Asks the cache for the text (see [`crate::queue::prefetch`]).
    pub fn prefetch(&self) {
        crate::queue::prefetch(&*self.text);
    }

    /// Part `i`, if present.
    pub fn get(&self, i: usize) -> Option<&str> {
        if self.present & (1 << i) == 0 {
            return None;
        }
        let start = i
            .checked_sub(1)
            .map_or(0, |before| self.ends[before] as usize);
        self.text.get(start..self.ends[i] as usize)
    }
}

/// Joiner, mover or leaver: the lifecycle stage of a provisioning operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Joiner,
    Mover,
    Leaver,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Joiner, Stage::Mover, Stage::Leaver];
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Joiner => "joiner",
            Stage::Mover => "mover",
            Stage::Leaver => "leaver",
        }
    }
}

/// What became of an operation (design.md "Outcome"): exactly one per operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Unconfirmed,
    Skipped,
    Unattributed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Unconfirmed,
        Outcome::Skipped,
        Outcome::Unattributed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Unconfirmed => "unconfirmed",
            Outcome::Skipped => "skipped",
            Outcome::Unattributed => "unattributed",
        }
    }
}

/// Why an operation failed (or is unconfirmed). Each carries a remediation hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Timeout,
    Other4xx,
    /// A non-2xx answer outside 4xx/5xx (1xx, 3xx: a redirect the client did not follow).
    UnexpectedStatus,
    IdpError,
    Unconfirmed,
}

impl Cause {
    pub const ALL: [Cause; 14] = [
        Cause::BadRequest,
        Cause::Unauthorized,
        Cause::Forbidden,
        Cause::NotFound,
        Cause::Conflict,
        Cause::PreconditionFailed,
        Cause::PayloadTooLarge,
        Cause::RateLimited,
        Cause::ServerError,
        Cause::Timeout,
        Cause::Other4xx,
        Cause::UnexpectedStatus,
        Cause::IdpError,
        Cause::Unconfirmed,
    ];

    /// The cause of a target's HTTP answer; `None` for 2xx. Status 0 means no response was
    /// sent (Envoy's `%RESPONSE_CODE%` 0, a client that went away): a timeout.
    pub fn from_http_status(status: u16) -> Option<Cause> {
        Some(match status {
            200..=299 => return None,
            // 499 is nginx's "client closed request": the IdP gave up waiting (its own timeout),
            // not a refusal by the target.
            0 | 499 | 504 => Cause::Timeout,
            400 => Cause::BadRequest,
            401 => Cause::Unauthorized,
            403 => Cause::Forbidden,
            404 => Cause::NotFound,
            409 => Cause::Conflict,
            412 => Cause::PreconditionFailed,
            413 => Cause::PayloadTooLarge,
            429 => Cause::RateLimited,
            _ if (400..500).contains(&status) => Cause::Other4xx,
            _ if (500..600).contains(&status) => Cause::ServerError,
            _ => Cause::UnexpectedStatus,
        })
    }

    pub fn from_name(name: &str) -> Option<Cause> {
        Cause::ALL.iter().copied().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::BadRequest => "bad_request",
            Cause::Unauthorized => "unauthorized",
            Cause::Forbidden => "forbidden",
            Cause::NotFound => "not_found",
            Cause::Conflict => "conflict",
            Cause::PreconditionFailed => "precondition_failed",
            Cause::PayloadTooLarge => "payload_too_large",
            Cause::RateLimited => "rate_limited",
            Cause::ServerError => "server_error",
            Cause::Timeout => "timeout",
            Cause::Other4xx => "other_4xx",
            Cause::UnexpectedStatus => "unexpected_status",
            Cause::IdpError => "idp_error",
            Cause::Unconfirmed => "unconfirmed",
        }
    }

    /// One line telling on-call what to do about this cause.
    pub fn hint(self) -> &'static str {
        match self {
            Cause::BadRequest => "target rejected the payload: compare the IdP attribute mappings with the app's SCIM schema (required userName/emails/active)",
            Cause::Unauthorized => "SCIM token expired or revoked: rotate it in the IdP's provisioning settings",
            Cause::Forbidden => "SCIM token lacks permission for this resource: check the token's scopes or the service account's role in the app",
            Cause::NotFound => "user or group missing in the target (deleted by hand?): reconcile the account by hand, this is drift",
            Cause::Conflict => "duplicate userName/externalId in the target (rename or rehire?): match or merge the existing account",
            Cause::PreconditionFailed => "ETag/version mismatch: the target changed underneath; re-read and retry once",
            Cause::PayloadTooLarge => "request too large (bulk or group with many members): lower the batch size in the IdP",
            Cause::RateLimited => "target rate-limited the IdP: slow bulk moves, spread the sync, ask the vendor for a higher limit",
            Cause::ServerError => "target app failed (5xx): check the app's status page; the IdP will retry",
            Cause::Timeout => "no answer in time (504, no response, or 499: the IdP gave up waiting): check the target's latency and the gateway's upstream timeout",
            Cause::Other4xx => "target refused the request: read the SCIM error detail in the gateway log",
            Cause::UnexpectedStatus => "target answered neither success nor error (redirect?): check the SCIM base URL configured in the IdP",
            Cause::IdpError => "the IdP failed before calling the target: read the IdP's error text (mapping, scoping or connector failure)",
            Cause::Unconfirmed => "the IdP claims it sent this but the target never saw it: check the gateway's logging and the IdP's target URL",
        }
    }
}

/// What the IdP believes happened to an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdpStatus {
    Success,
    Failure,
    Skipped,
}

impl IdpStatus {
    pub const ALL: [IdpStatus; 3] = [IdpStatus::Success, IdpStatus::Failure, IdpStatus::Skipped];
    pub fn as_str(self) -> &'static str {
        match self {
            IdpStatus::Success => "success",
            IdpStatus::Failure => "failure",
            IdpStatus::Skipped => "skipped",
        }
    }
}

/// Where a record came from: the source's index in the config, and the line it was on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Origin {
    pub source: u16,
    pub file: u32,
    pub line: u64,
}

/// One IdP provisioning record: what the IdP tried and what it believes happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdpRecord {
    pub time: Ts,
    /// An ID both sides log (the IdP's request carries it to the target).
    pub correlation_id: Option<String>,
    /// The IdP's own ID of the operation (Entra `changeId`, Okta `transaction.id`): groups the
    /// IdP's records of one operation and names it in outputs, but is never on the wire.
    pub operation_id: Option<String>,
    pub action: String,
    pub stage: Stage,
    pub app: Option<String>,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    /// The SCIM resource id of the user in the target app (Entra `targetIdentity.id`).
    pub target_id: Option<String>,
    pub status: Option<IdpStatus>,
    pub error: Option<String>,
    /// When the lifecycle change happened at the source of truth, if the record says.
    pub trigger_time: Option<Ts>,
    /// Groups the user belongs to, for the high-risk policy's `groups` patterns.
    pub groups: Vec<String>,
    pub origin: Origin,
}

/// HTTP methods the join cares about. Anything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Other,
}

impl Method {
    /// Every method, in the order the join's packed records number them (`join/packed.rs`).
    pub const ALL: [Method; 6] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Other,
    ];
    pub fn parse(text: &str) -> Method {
        match trim(text) {
            m if m.eq_ignore_ascii_case("GET") => Method::Get,
            m if m.eq_ignore_ascii_case("POST") => Method::Post,
            m if m.eq_ignore_ascii_case("PUT") => Method::Put,
            m if m.eq_ignore_ascii_case("PATCH") => Method::Patch,
            m if m.eq_ignore_ascii_case("DELETE") => Method::Delete,
            _ => Method::Other,
        }
    }
    /// POST, PUT, PATCH and DELETE change state; only they can be attempts.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Method::Post | Method::Put | Method::Patch | Method::Delete
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

/// What a SCIM write does to its resource, read from the method, the path and the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    /// `POST /Users`.
    CreateUser,
    /// `DELETE /Users/{id}`.
    DeleteUser,
    /// PATCH/PUT setting `active` to false.
    Disable,
    /// PATCH/PUT setting `active` to true.
    Enable,
    /// Any other PATCH/PUT on `/Users`, or any write on `/Groups`.
    Update,
    /// A PATCH/PUT on `/Users/{id}` whose body was not logged: it may be a disable or an
    /// update, so it is compatible with both when joining without a shared ID.
    UnknownUpdate,
}

impl WriteKind {
    /// The stage a gateway-only write takes (design.md "Stage").
    pub fn stage(self) -> Stage {
        match self {
            WriteKind::CreateUser => Stage::Joiner,
            WriteKind::DeleteUser | WriteKind::Disable => Stage::Leaver,
            WriteKind::Enable | WriteKind::Update | WriteKind::UnknownUpdate => Stage::Mover,
        }
    }
    /// Whether an IdP operation of `stage` can be this write (clarification 17).
    pub fn compatible_with(self, stage: Stage) -> bool {
        match self {
            WriteKind::CreateUser => stage == Stage::Joiner,
            WriteKind::DeleteUser | WriteKind::Disable => stage == Stage::Leaver,
            WriteKind::Enable => matches!(stage, Stage::Joiner | Stage::Mover),
            WriteKind::Update => stage == Stage::Mover,
            WriteKind::UnknownUpdate => matches!(stage, Stage::Mover | Stage::Leaver),
        }
    }
}

/// A member a group write names, by its SCIM id, and what the write does to its membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub change: MemberChange,
}

/// What a group write does to a member (RFC 7644 §3.5.2: the PATCH operation's `op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    Add,
    Remove,
    /// The list replaced, or a PUT of the group, or added and removed in one request.
    Set,
}

impl MemberChange {
    /// Whether an IdP action can be this change: an action naming a removal (Okta's
    /// `group_membership.remove`) a removal, one naming an addition an addition, any other
    /// either; a list replaced goes with both.
    pub fn done_by(self, action: &str) -> bool {
        // Words split at anything not a letter or digit, and where a capital follows a small
        // letter (`AddMemberToGroup`).
        let (mut adds, mut removes) = (false, false);
        let mut word = String::new();
        let mut previous = ' ';
        for c in action.chars().chain([' ']) {
            let starts = c.is_ascii_uppercase() && previous.is_ascii_lowercase();
            if !c.is_ascii_alphanumeric() || starts {
                match word.as_str() {
                    "add" | "added" | "assign" | "assigned" | "create" | "created" => adds = true,
                    "remove" | "removed" | "unassign" | "unassigned" | "delete" | "deleted" => {
                        removes = true
                    }
                    _ => {}
                }
                word.clear();
            }
            if c.is_ascii_alphanumeric() {
                word.push(c.to_ascii_lowercase());
            }
            previous = c;
        }
        match self {
            MemberChange::Set => true,
            MemberChange::Add => adds || !removes,
            MemberChange::Remove => removes || !adds,
        }
    }

    /// The change of a PATCH operation `op`; `None` for an unknown one.
    pub fn of_op(op: &str) -> Option<MemberChange> {
        [
            ("add", MemberChange::Add),
            ("remove", MemberChange::Remove),
            ("replace", MemberChange::Set),
        ]
        .into_iter()
        .find(|(name, _)| op.eq_ignore_ascii_case(name))
        .map(|(_, change)| change)
    }
}

/// One request the gateway logged, with what the target answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayRecord {
    pub time: Ts,
    pub correlation_id: Option<String>,
    pub method: Method,
    /// Request path with secrets in the query string redacted.
    pub path: String,
    /// The final HTTP status; 0 when no response was sent.
    pub status: u16,
    pub duration_ms: Option<f64>,
    pub app: Option<String>,
    /// Who the request was authenticated as (for post-disable activity).
    pub principal: Option<String>,
    /// The `userName` the request names (body or `filter=userName eq "…"`).
    pub user_name: Option<String>,
    /// The SCIM resource id: from the path, or the `Location`/body of a 201.
    pub resource_id: Option<String>,
    /// Set for SCIM writes (`/Users`, `/Groups`); `None` for reads and non-SCIM traffic.
    pub write: Option<WriteKind>,
    /// A SCIM error body's `scimType` and `detail`, redacted.
    pub error_detail: Option<String>,
    /// The members a write to `/Groups/{id}` adds, removes or sets, by id
    /// ([`crate::parse::scim::group_members`]): whose membership it changes.
    #[serde(default, skip_serializing_if = "<[Member]>::is_empty")]
    pub members: Box<[Member]>,
    pub origin: Origin,
}

/// A lifecycle event at the source of truth that starts a leaver clock, or (`returns`) stops
/// one: the user enabled or assigned again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    pub time: Ts,
    /// `None` covers every app of the user that gets a leaver operation (clarification 16).
    pub app: Option<String>,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    pub event: String,
    pub groups: Vec<String>,
    /// A return (Entra "Enable account", Okta `user.lifecycle.reactivate`), not a leave.
    #[serde(default)]
    pub returns: bool,
    pub origin: Origin,
}

/// An IdP event that is not an operation but says why the operation with the same
/// `operation_id` failed (Okta's `application.integration.rate_limit_exceeded`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoteRecord {
    pub time: Ts,
    pub operation_id: Option<String>,
    pub correlation_id: Option<String>,
    pub cause: Cause,
    pub origin: Origin,
}

/// What a parsed line becomes.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Idp(IdpRecord),
    Gateway(GatewayRecord),
    Trigger(TriggerRecord),
    Note(NoteRecord),
    /// A well-formed line that is not an operation (an unmapped IdP action): its time still
    /// counts toward `as_of` (clarification 2).
    Ignored(Ts),
}

impl Record {
    pub fn time(&self) -> Ts {
        match self {
            Record::Idp(r) => r.time,
            Record::Gateway(r) => r.time,
            Record::Trigger(r) => r.time,
            Record::Note(r) => r.time,
            Record::Ignored(t) => *t,
        }
    }

    /// Asks the cache for the texts the engine reads first (see [`crate::queue::prefetch`]):
    /// with `replay --threads 2` another thread parsed them, and they sit in its core's cache.
    pub fn prefetch(&self) {
        match self {
            Record::Idp(r) => r.prefetch(),
            Record::Gateway(r) => prefetch_texts(
                [&r.correlation_id, &r.app, &r.principal, &r.user_name],
                &r.path,
            ),
            _ => {}
        }
    }
}

impl IdpRecord {
    /// Asks the cache for the texts joining and judging read (see
    /// [`crate::queue::prefetch`]): its IDs, app, login and action.
    pub fn prefetch(&self) {
        let texts = [
            &self.correlation_id,
            &self.app,
            &self.user_id,
            &self.user_login,
        ];
        prefetch_texts(texts, &self.action);
    }
}

/// [`crate::queue::prefetch`] of each text a record has of `texts`, then of `last`.
fn prefetch_texts<const N: usize>(texts: [&Option<String>; N], last: &str) {
    for text in texts.into_iter().flatten() {
        crate::queue::prefetch(text.as_str());
    }
    crate::queue::prefetch(last);
}

#[cfg(test)]
mod tests {
    use super::fold_case;
    use std::borrow::Cow;

    #[test]
    fn the_ascii_trim_shortcut_trims_as_str_trim_does() {
        // Cases between bars.
        let cases = "| |-|x|ab| a|a |\ta\n|\u{b}a\u{c}|\u{a0}a|a\u{a0}|\u{2003}é\u{3000}|é|ab\u{85}|\u{7f}a";
        for case in cases.split('|') {
            assert_eq!(super::trim(case), case.trim(), "{case:?}");
        }
    }

    /// nginx's 499 (the client, the IdP, closed the request) is a timeout, not a refusal.
    #[test]
    fn statuses_give_their_causes() {
        use super::Cause;
        for (status, cause) in [
            (200, None),
            (0, Some(Cause::Timeout)),
            (499, Some(Cause::Timeout)),
            (504, Some(Cause::Timeout)),
            (498, Some(Cause::Other4xx)),
            (401, Some(Cause::Unauthorized)),
            (503, Some(Cause::ServerError)),
            (302, Some(Cause::UnexpectedStatus)),
        ] {
            assert_eq!(Cause::from_http_status(status), cause, "{status}");
        }
    }

    #[test]
    fn folded_text_is_borrowed_and_the_rest_folded() {
        assert!(matches!(fold_case("rita@corp.example"), Cow::Borrowed(_)));
        assert_eq!(fold_case("Rita@Corp.Example"), "rita@corp.example");
        assert_eq!(fold_case("ÄRGER"), "ärger");
    }
}
