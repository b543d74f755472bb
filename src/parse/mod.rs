//! Parse: one log line in, one [`Record`] (or a counted [`ParseError`]) out.
//!
//! A source's config is resolved once into a [`LineParser`]: preset defaults merged with the
//! user's overrides, pointers compiled, regexes built. Parsing is then a pure function of the
//! line's bytes — no clock, no I/O — so replay and the daemon parse identically.

pub mod derive;
pub mod json;
pub mod presets;
pub mod redact;
pub mod scim;

use crate::config::{AppsConfig, Role, SourceConfig};
use crate::model::{
    Cause, GatewayRecord, IdpRecord, IdpStatus, Method, NoteRecord, Origin, Record, Stage,
    TriggerRecord,
};
use crate::time::{parse_time_with, time_from_number, TimeFormat, Ts};
use presets::{Derive, Kind};
use std::collections::HashMap;

/// Every field any role can map. The config names them in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Time,
    CorrelationId,
    Action,
    App,
    UserId,
    UserLogin,
    TargetId,
    Status,
    Error,
    TriggerTime,
    Groups,
    Method,
    Path,
    DurationMs,
    DurationSecs,
    Principal,
    UserName,
    Location,
    Body,
    Request,
    ResponseBody,
    Event,
    OperationId,
    /// Preset-internal: CloudTrail's `eventSource`.
    EventSource,
    /// Preset-internal: CloudTrail's `errorCode`.
    ErrorCode,
}

const FIELD_COUNT: usize = 25;

impl Field {
    /// Every field, in declaration order.
    pub const ALL: [Field; FIELD_COUNT] = [
        Field::Time,
        Field::CorrelationId,
        Field::Action,
        Field::App,
        Field::UserId,
        Field::UserLogin,
        Field::TargetId,
        Field::Status,
        Field::Error,
        Field::TriggerTime,
        Field::Groups,
        Field::Method,
        Field::Path,
        Field::DurationMs,
        Field::DurationSecs,
        Field::Principal,
        Field::UserName,
        Field::Location,
        Field::Body,
        Field::Request,
        Field::ResponseBody,
        Field::Event,
        Field::OperationId,
        Field::EventSource,
        Field::ErrorCode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::CorrelationId => "correlation_id",
            Field::Action => "action",
            Field::App => "app",
            Field::UserId => "user_id",
            Field::UserLogin => "user_login",
            Field::TargetId => "target_id",
            Field::Status => "status",
            Field::Error => "error",
            Field::TriggerTime => "trigger_time",
            Field::Groups => "groups",
            Field::Method => "method",
            Field::Path => "path",
            Field::DurationMs => "duration_ms",
            Field::DurationSecs => "duration_secs",
            Field::Principal => "principal",
            Field::UserName => "user_name",
            Field::Location => "location",
            Field::Body => "body",
            Field::Request => "request",
            Field::ResponseBody => "response_body",
            Field::Event => "event",
            Field::OperationId => "operation_id",
            Field::EventSource => "event_source",
            Field::ErrorCode => "error_code",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }
}

/// A value picked from a line: borrowed from it, or text the line's [`Picked`] holds. A value
/// owns nothing, so a `Picked` (25 slots, one per field) drops without visiting each slot: that
/// drop was ~200 instructions a line, 1.2% of a replay (callgrind).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// Text of the line.
    Str(&'a str),
    /// Text made for this line (an escaped JSON string unescaped, a preset's derived value):
    /// held by the [`Picked`] the value is in, at this index ([`Picked::own`]).
    Own(usize),
    /// A JSON number, as written.
    Num(&'a str),
    Bool(bool),
    Null,
    /// A JSON object or array, as written.
    Raw(&'a str),
    /// The contents of a JSON string, still escaped (and with no `\u` escape, so it always
    /// unescapes): a request body logged as a string, read from this form where it can be
    /// (see [`Picked::body`]). Not text: [`Picked::text`] passes over it.
    Escaped(&'a str),
}

/// The values picked from one line, by field.
#[derive(Default)]
pub struct Picked<'a> {
    /// (priority, value): a field mapped to several alternatives keeps the one listed first.
    values: [Option<(u8, Value<'a>)>; FIELD_COUNT],
    /// The texts [`Value::Own`] points at.
    owned: Vec<String>,
    /// A string picked held a `\u` escape that is no character (a lone surrogate), which
    /// serde_json refuses: the line is set aside (it was read as null, and an ID or login
    /// so lost cost its join with no parse error; QA helper-54).
    pub(crate) lone_surrogate: bool,
}

/// The slots with [`Value::Own`] shown as the text it points at, so two `Picked` holding the
/// same texts read the same whatever order their texts were made in.
impl std::fmt::Debug for Picked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|slot| {
                slot.map(|(priority, value)| match value {
                    Value::Own(index) => (priority, Value::Str(&self.owned[index])),
                    value => (priority, value),
                })
            }))
            .finish()
    }
}

impl<'a> Picked<'a> {
    /// Keeps text made for this line, as a value that points at it.
    pub fn own(&mut self, text: String) -> Value<'a> {
        self.owned.push(text);
        Value::Own(self.owned.len() - 1)
    }
    /// Sets a field at a priority (0 = the first alternative). A lower priority number
    /// replaces a higher one; at equal priority the first value seen wins (a filter may match
    /// several array elements). JSON null never replaces anything.
    pub fn set_at(&mut self, field: Field, priority: u8, value: Value<'a>) {
        if value == Value::Null {
            return;
        }
        let slot = &mut self.values[field as usize];
        if slot.as_ref().is_none_or(|(p, _)| priority < *p) {
            *slot = Some((priority, value));
        }
    }
    /// Sets a field at the first priority.
    pub fn set(&mut self, field: Field, value: Value<'a>) {
        self.set_at(field, 0, value);
    }
    /// The request body's facts: read straight from a body logged as an escaped string where
    /// that can be done exactly, else from its text as [`Picked::text`] gives it.
    pub fn body(&self) -> Option<scim::RequestBody> {
        match self.get(Field::Body)? {
            Value::Escaped(raw) => scim::request_body_escaped(raw),
            _ => self.text(Field::Body).and_then(scim::request_body),
        }
    }
    /// The member ids a group write's body names ([`scim::group_members`]), from the body's
    /// text however it was logged.
    pub fn group_members(&self) -> Box<[crate::model::Member]> {
        // Checked once, on the text as logged: an escaped body is unescaped only if it may.
        let members = match self.get(Field::Body) {
            Some(Value::Escaped(raw)) if !scim::may_name_members(raw) => None,
            Some(Value::Escaped(raw)) => json::unescaped(raw)
                .as_deref()
                .and_then(present)
                .map(scim::group_members),
            _ => (self.text(Field::Body))
                .filter(|text| scim::may_name_members(text))
                .map(scim::group_members),
        };
        members.unwrap_or_default().into_boxed_slice()
    }
    /// Replaces a field with fixed text whatever was there (a preset's derived value).
    pub fn replace_static(&mut self, field: Field, value: &'static str) {
        self.values[field as usize] = Some((0, Value::Str(value)));
    }
    /// Replaces a field whatever was there (a preset's derived value).
    pub fn replace(&mut self, field: Field, value: Option<String>) {
        self.values[field as usize] = value.map(|v| (0, self.own(v)));
    }
    pub fn get(&self, field: Field) -> Option<&Value<'a>> {
        self.values[field as usize].as_ref().map(|(_, v)| v)
    }
    /// The field as text; `-`, empty strings and JSON null are absent (nginx writes `-`). An
    /// ID or a `Location` logged as an array of strings is its first (a header sent twice, as
    /// Kong logs one); any other array stays its JSON text.
    pub fn text(&self, field: Field) -> Option<&str> {
        let text = match *self.get(field)? {
            Value::Str(s) => s,
            Value::Own(index) => self.owned[index].as_str(),
            Value::Num(n) => n,
            Value::Raw(r)
                if matches!(
                    field,
                    Field::CorrelationId | Field::OperationId | Field::Location
                ) =>
            {
                json::first_string(r).unwrap_or(r)
            }
            Value::Raw(r) => r,
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            Value::Null | Value::Escaped(_) => return None,
        };
        present(text)
    }
}

/// Logged text as a value: trimmed, and absent when empty or `-` (nginx writes `-`).
pub fn present(text: &str) -> Option<&str> {
    let trimmed = crate::model::trim(text);
    if trimmed.is_empty() || trimmed == "-" {
        None
    } else {
        Some(trimmed)
    }
}

/// Why a line could not become a record. The label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InvalidUtf8,
    InvalidJson,
    NoMatch,
    MissingField,
    BadTime,
    BadField,
    LineTooLong,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::NoMatch,
        Reason::MissingField,
        Reason::BadTime,
        Reason::BadField,
        Reason::LineTooLong,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::NoMatch => "no_match",
            Reason::MissingField => "missing_field",
            Reason::BadTime => "bad_time",
            Reason::BadField => "bad_field",
            Reason::LineTooLong => "line_too_long",
        }
    }
}

/// A line that could not become a record: the reason, and a short detail for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub reason: Reason,
    pub detail: String,
}

impl ParseError {
    /// The detail may quote the line (`status "Bearer …" is not an HTTP status`): scrubbed,
    /// since it reaches logs and the report's samples.
    fn new(reason: Reason, detail: impl Into<String>) -> ParseError {
        let detail = detail.into();
        ParseError {
            reason,
            detail: match redact::scrub(&detail) {
                std::borrow::Cow::Borrowed(_) => detail,
                std::borrow::Cow::Owned(scrubbed) => scrubbed,
            },
        }
    }
    fn missing(field: Field) -> ParseError {
        ParseError::new(Reason::MissingField, format!("no {} field", field.name()))
    }
}

/// The key of the array a line is a batch of (Event Hub's `records`, a Graph page's `value`,
/// CloudTrail's S3 file `Records`), if it starts as one.
fn batch_of(text: &str) -> Option<&'static str> {
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    ["records", "Records", "value"].into_iter().find(|key| {
        rest.strip_prefix('"')
            .and_then(|r| r.strip_prefix(key))
            .and_then(|r| r.strip_prefix('"'))
            .and_then(|r| r.trim_start().strip_prefix(':'))
            .is_some_and(|r| r.trim_start().starts_with('['))
    })
}

enum Format {
    Json(json::Selector),
    Regex {
        regex: regex::Regex,
        /// The preset's slower pattern for a line `regex` does not match (same captures).
        unescaped: Option<regex::Regex>,
        /// (capture group index, field, priority)
        captures: Vec<(usize, Field, u8)>,
    },
}

/// How a source reads actions or events ([`LineParser::reading`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    /// A trigger source's (its leaver events are triggers, its joiner ones returns).
    pub trigger_source: bool,
    /// Action → stage, lowercased, sorted.
    pub stages: Vec<(String, Stage)>,
    pub triggers: Vec<String>,
    pub returns: Vec<String>,
}

impl Reading {
    /// What a record with this action or event becomes: as the parser makes it.
    pub fn classify(&self, action: &str) -> Classified {
        let action = action.to_ascii_lowercase();
        let stage = (self
            .stages
            .binary_search_by(|(a, _)| a.as_str().cmp(&action))
            .ok())
        .map(|i| self.stages[i].1);
        let listed = |list: &[String]| list.binary_search(&action).is_ok();
        match (self.trigger_source, stage) {
            (true, Some(Stage::Leaver)) => Classified::Trigger,
            (true, Some(Stage::Joiner)) => Classified::Return,
            (true, _) => Classified::Other,
            (false, Some(stage)) => Classified::Stage(stage),
            _ if listed(&self.triggers) => Classified::Trigger,
            _ if listed(&self.returns) => Classified::Return,
            _ => Classified::Other,
        }
    }
}

/// What an action or event is to a source ([`Reading::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// An operation of this stage (an IdP source's).
    Stage(Stage),
    /// A lifecycle event at the source of truth that starts a leaver clock.
    Trigger,
    /// The user enabled or assigned again there.
    Return,
    /// A note, or nothing scimwatch reads.
    Other,
}

/// A source's resolved parser.
pub struct LineParser {
    pub name: String,
    pub role: Role,
    pub max_line_bytes: usize,
    source_index: u16,
    format: Format,
    derive: Derive,
    mapped: Vec<Field>,
    stages: Vec<(String, Stage)>,
    triggers: Vec<String>,
    /// IdP actions that stop a leaver clock at the source of truth (the user enabled again).
    returns: Vec<String>,
    causes: Vec<(String, Cause)>,
    status: Vec<(String, IdpStatus)>,
    default_app: Option<String>,
    aliases: HashMap<String, String>,
    time_format: TimeFormat,
    /// The minute of the last RFC 3339 time read (a log's lines share it in runs).
    minutes: crate::time::MinuteCache,
}

/// A value listed under two of `keys` in `lists` (`[source.stages]`, `[source.status]`), as
/// they are matched (case-insensitive): the error names the second key. Taken, the value
/// meant whichever came last (QA helper-54: `success` and `failure` both listing "ok").
fn listed_once(
    table: &str,
    lists: &std::collections::BTreeMap<String, Vec<String>>,
    keys: &[&str],
    why: &str,
) -> Result<(), (String, String)> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for key in keys {
        for value in lists.get(*key).into_iter().flatten() {
            if let Some(first) = seen.insert(value.to_ascii_lowercase(), key) {
                if first != *key {
                    return Err((
                        format!("{table}.{key}"),
                        format!("{value:?} is also listed under {first}: {why}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What `[source.stages]` may name.
const STAGE_KEYS: &str =
    "stages are joiner, mover, leaver (and trigger and return for an idp source)";

/// The keys of a `[[source]]` that are not tables: one written below `[source.fields]` is
/// read as a field.
const SOURCE_KEYS: [&str; 9] = [
    "name",
    "role",
    "format",
    "paths",
    "pattern",
    "app",
    "time_format",
    "max_line_bytes",
    "stale_after_secs",
];

/// Resolves a source's config into a parser, or names the offending key and what is wrong.
pub fn resolve_source(
    source: &SourceConfig,
    apps: &AppsConfig,
) -> Result<LineParser, (String, String)> {
    let preset =
        presets::find(&source.format, source.role).map_err(|e| ("format".to_string(), e))?;
    let allowed = source.role.fields();
    // Preset mapping (trusted: it may use preset-internal fields), then the user's overrides
    // ("" unsets; a list is tried in order).
    let mut mapping: Vec<(Field, Vec<String>)> = Vec::new();
    for (name, targets) in preset.fields {
        if let Some(field) = Field::from_name(name) {
            mapping.push((field, targets.iter().map(|t| t.to_string()).collect()));
        }
    }
    for (name, targets) in &source.fields {
        if !allowed.contains(&name.as_str()) {
            let role = source.role.as_str();
            let article = if role.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            // TOML puts every key after `[source.fields]` in that table, so a source's own
            // key written below it lands here.
            let misplaced = if SOURCE_KEYS.contains(&name.as_str()) {
                format!(
                    "; `{name}` is a key of the [[source]] itself: write it above \
                     [source.fields], as every key below a table header belongs to that table"
                )
            } else {
                String::new()
            };
            return Err((
                format!("fields.{name}"),
                format!(
                    "{article} {role} source has no field {name:?} (fields: {}){misplaced}",
                    allowed.join(", ")
                ),
            ));
        }
        let field = Field::from_name(name)
            .ok_or_else(|| (format!("fields.{name}"), "unknown field".to_string()))?;
        mapping.retain(|(f, _)| *f != field);
        let alternatives: Vec<String> = targets
            .alternatives()
            .into_iter()
            .map(str::to_string)
            .collect();
        if alternatives.len() > 16 {
            return Err((format!("fields.{name}"), "at most 16 alternatives".into()));
        }
        if !alternatives.is_empty() {
            mapping.push((field, alternatives));
        }
    }
    let format = match preset.kind {
        Kind::Json => {
            if source.pattern.is_some() {
                return Err((
                    "pattern".into(),
                    format!(
                        "format {:?} reads JSON; `pattern` is for format = \"regex\"",
                        source.format
                    ),
                ));
            }
            let mut selector = json::Selector::default();
            for (field, pointers) in &mapping {
                for (priority, pointer) in pointers.iter().enumerate() {
                    selector
                        .add_at(pointer, *field, priority as u8)
                        .map_err(|e| (format!("fields.{}", field.name()), e.0))?;
                }
            }
            Format::Json(selector)
        }
        Kind::Regex(preset_pattern, unescaped) => {
            let pattern = source.pattern.as_deref().unwrap_or(preset_pattern);
            // A pattern of the config's own replaces both of the preset's.
            let unescaped = match (&source.pattern, unescaped) {
                (None, Some(unescaped)) => Some(
                    regex::Regex::new(unescaped)
                        .map_err(|e| ("pattern".to_string(), format!("not a valid regex: {e}")))?,
                ),
                _ => None,
            };
            if pattern.is_empty() {
                return Err((
                    "pattern".into(),
                    "format = \"regex\" needs a `pattern` with named captures".into(),
                ));
            }
            let regex = regex::Regex::new(pattern)
                .map_err(|e| ("pattern".to_string(), format!("not a valid regex: {e}")))?;
            let names: Vec<&str> = regex.capture_names().flatten().collect();
            // A capture named after a field maps it unless the config says otherwise.
            for name in &names {
                if let Some(field) = Field::from_name(name) {
                    if allowed.contains(name)
                        && !mapping.iter().any(|(f, _)| *f == field)
                        && !source.fields.contains_key(*name)
                    {
                        mapping.push((field, vec![(*name).to_string()]));
                    }
                }
            }
            let mut captures = Vec::new();
            for (field, capture_names) in &mapping {
                for (priority, capture) in capture_names.iter().enumerate() {
                    let index = regex
                        .capture_names()
                        .position(|n| n == Some(capture.as_str()))
                        .ok_or_else(|| {
                            (
                                format!("fields.{}", field.name()),
                                format!("the pattern has no capture named {capture:?}"),
                            )
                        })?;
                    captures.push((index, *field, priority as u8));
                }
            }
            Format::Regex {
                regex,
                unescaped,
                captures,
            }
        }
    };
    let mapped: Vec<Field> = mapping.iter().map(|(f, _)| *f).collect();
    let derived: &[Field] = match (preset.derive, source.role) {
        (Derive::CloudTrail, Role::Gateway) => &[Field::Method, Field::Path, Field::Status],
        (Derive::CloudTrail, _) => &[Field::Status],
        _ => &[],
    };
    for required in source.role.required_fields() {
        let field = Field::from_name(required).expect("required fields are fields");
        if !mapped.contains(&field) && !derived.contains(&field) {
            return Err((
                format!("fields.{required}"),
                format!("a {} source must map {required:?}", source.role.as_str()),
            ));
        }
    }
    if source.role == Role::Gateway
        && preset.derive == Derive::None
        && !mapped.contains(&Field::Request)
        && !(mapped.contains(&Field::Method) && mapped.contains(&Field::Path))
    {
        return Err((
            "fields.method".into(),
            "a gateway source must map method and path (or request)".into(),
        ));
    }
    // Stages: preset lists, each replaced by the user's list for that stage. `trigger` (IdP
    // sources) lists actions that are leaver triggers at the source of truth, and `return`
    // those that stop them (the user enabled again); a trigger source's `joiner` events are
    // its returns.
    let stage_keys = ["joiner", "mover", "leaver"];
    listed_once(
        "stages",
        &source.stages,
        &stage_keys,
        "an action has one stage",
    )?;
    listed_once(
        "status",
        &source.status,
        &["success", "failure", "skipped"],
        "a status value means one outcome",
    )?;
    let mut stages: Vec<(String, Stage)> = Vec::new();
    let mut triggers: Vec<String> = Vec::new();
    let mut returns: Vec<String> = Vec::new();
    for (key, values) in &source.stages {
        if source.role == Role::Gateway {
            return Err((format!("stages.{key}"), "gateway records take their stage from the request; stages are for idp and trigger sources".into()));
        }
        let stage = match key.as_str() {
            "joiner" => Stage::Joiner,
            "mover" => Stage::Mover,
            "leaver" => Stage::Leaver,
            "trigger" if source.role == Role::Idp => {
                triggers.extend(values.iter().map(|v| v.to_ascii_lowercase()));
                continue;
            }
            "return" if source.role == Role::Idp => {
                returns.extend(values.iter().map(|v| v.to_ascii_lowercase()));
                continue;
            }
            other => return Err((format!("stages.{other}"), STAGE_KEYS.into())),
        };
        if source.role == Role::Trigger && stage == Stage::Mover {
            return Err((
                format!("stages.{key}"),
                "a trigger source maps `leaver` events (and `joiner` ones: the user enabled again)"
                    .into(),
            ));
        }
        stages.extend(values.iter().map(|v| (v.to_ascii_lowercase(), stage)));
    }
    // A trigger preset's events are its own (the generic formats' stage words are an IdP's).
    if source.role == Role::Idp || preset.role == Some(Role::Trigger) {
        for (stage, values) in preset.stages {
            if !source.stages.contains_key(stage.as_str()) {
                stages.extend(values.iter().map(|v| (v.to_ascii_lowercase(), *stage)));
            }
        }
    }
    if source.role == Role::Idp && !source.stages.contains_key("trigger") {
        triggers.extend(preset.triggers.iter().map(|v| v.to_ascii_lowercase()));
    }
    if source.role == Role::Idp && !source.stages.contains_key("return") {
        returns.extend(preset.returns.iter().map(|v| v.to_ascii_lowercase()));
    }
    if source.role == Role::Trigger && !stages.iter().any(|(_, s)| *s == Stage::Leaver) {
        return Err((
            "stages.leaver".into(),
            "a trigger source must list its leaver events in [source.stages] leaver = [...]".into(),
        ));
    }
    let mut causes: Vec<(String, Cause)> = Vec::new();
    for (key, values) in &source.causes {
        if source.role != Role::Idp {
            return Err((
                format!("causes.{key}"),
                "causes are notes in an idp source".into(),
            ));
        }
        let cause = Cause::from_name(key)
            .ok_or_else(|| (format!("causes.{key}"), format!("unknown cause {key:?}")))?;
        causes.extend(values.iter().map(|v| (v.to_ascii_lowercase(), cause)));
    }
    for (cause, values) in preset.causes {
        if !source.causes.contains_key(cause.as_str()) && source.role == Role::Idp {
            causes.extend(values.iter().map(|v| (v.to_ascii_lowercase(), *cause)));
        }
    }
    let mut status: Vec<(String, IdpStatus)> = Vec::new();
    for (key, values) in &source.status {
        let value = match key.as_str() {
            "success" => IdpStatus::Success,
            "failure" => IdpStatus::Failure,
            "skipped" => IdpStatus::Skipped,
            other => {
                return Err((
                    format!("status.{other}"),
                    "status keys are success, failure and skipped".into(),
                ))
            }
        };
        status.extend(values.iter().map(|v| (v.to_ascii_lowercase(), value)));
    }
    for (value, values) in preset.status {
        if !source.status.contains_key(value.as_str()) {
            status.extend(values.iter().map(|v| (v.to_ascii_lowercase(), *value)));
        }
    }
    let aliases = apps.alias_map();
    Ok(LineParser {
        name: source.name.clone(),
        role: source.role,
        max_line_bytes: source.max_line_bytes,
        source_index: 0,
        format,
        derive: preset.derive,
        mapped,
        stages,
        triggers,
        returns,
        causes,
        status,
        default_app: source.app.clone(),
        aliases,
        time_format: source.time_format,
        minutes: crate::time::MinuteCache::default(),
    })
}

impl LineParser {
    /// Builds the parser of a source (already validated by `Config::validate`).
    pub fn new(
        source: &SourceConfig,
        apps: &AppsConfig,
        source_index: u16,
    ) -> anyhow::Result<LineParser> {
        let mut parser = resolve_source(source, apps).map_err(|(key, message)| {
            anyhow::anyhow!("source {:?}: {key}: {message}", source.name)
        })?;
        parser.source_index = source_index;
        Ok(parser)
    }

    pub fn source_index(&self) -> u16 {
        self.source_index
    }

    /// Whether the source maps a field (used by `check-config` to print what it understood).
    pub fn maps(&self, field: Field) -> bool {
        self.mapped.contains(&field)
    }

    /// Parses one line (without its newline).
    pub fn parse(&self, line: &[u8], file: u32, line_number: u64) -> Result<Record, ParseError> {
        let origin = Origin {
            source: self.source_index,
            file,
            line: line_number,
        };
        if line.len() > self.max_line_bytes {
            return Err(ParseError::new(
                Reason::LineTooLong,
                format!("{} bytes", line.len()),
            ));
        }
        let text = crate::swar::text_of(line).map_err(|e| {
            ParseError::new(
                Reason::InvalidUtf8,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let mut picked = Picked::default();
        match &self.format {
            Format::Json(selector) => {
                selector
                    .pick(text, &mut picked)
                    .map_err(|e| ParseError::new(Reason::InvalidJson, e))?;
                if picked.lone_surrogate {
                    return Err(ParseError::new(
                        Reason::InvalidJson,
                        "a field read holds a \\u escape that is no character (a lone surrogate)",
                    ));
                }
            }
            Format::Regex {
                regex,
                unescaped,
                captures,
            } => {
                let caps = regex
                    .captures(text)
                    .or_else(|| unescaped.as_ref()?.captures(text))
                    .ok_or_else(|| {
                        ParseError::new(Reason::NoMatch, "line does not match the pattern")
                    })?;
                for (index, field, priority) in captures {
                    if let Some(m) = caps.get(*index) {
                        picked.set_at(*field, *priority, Value::Str(m.as_str()));
                    }
                }
            }
        }
        if self.derive == Derive::CloudTrail && !derive::cloudtrail(&mut picked, self.role) {
            // Another AWS service's event in the same trail: not ours, but its time counts.
            return Ok(Record::Ignored(self.required_time(&picked)?));
        }
        let record = match self.role {
            Role::Idp => self.idp_record(&picked, origin),
            Role::Gateway => self.gateway_record(&picked, origin),
            Role::Trigger => self.trigger_record(&picked, origin),
        };
        record.map_err(|error| match batch_of(text) {
            Some(key) if error.reason == Reason::MissingField => ParseError::new(
                Reason::MissingField,
                format!(
                    "a batch of records (a \"{key}\" array), not one record: scimwatch reads \
                     one record a line; unwrap it first, e.g. jq -c '.{key}[]'"
                ),
            ),
            _ => error,
        })
    }

    fn time_of(&self, picked: &Picked<'_>, field: Field) -> Result<Option<Ts>, ParseError> {
        match picked.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Num(n)) => {
                let number: f64 = n.parse().map_err(|_| {
                    ParseError::new(
                        Reason::BadTime,
                        format!("{} {n:?} is not a time", field.name()),
                    )
                })?;
                time_from_number(number, self.time_format)
                    .map(Some)
                    .ok_or_else(|| {
                        ParseError::new(
                            Reason::BadTime,
                            format!("{} {n} is out of range", field.name()),
                        )
                    })
            }
            Some(_) => match picked.text(field) {
                None => Ok(None),
                Some(text) => parse_time_with(text, self.time_format, &self.minutes)
                    .map(Some)
                    .map_err(|e| {
                        ParseError::new(Reason::BadTime, format!("{}: {e}", field.name()))
                    }),
            },
        }
    }

    fn required_time(&self, picked: &Picked<'_>) -> Result<Ts, ParseError> {
        self.time_of(picked, Field::Time)?
            .ok_or_else(|| ParseError::missing(Field::Time))
    }

    fn app(&self, picked: &Picked<'_>) -> Option<String> {
        let raw = picked.text(Field::App).or(self.default_app.as_deref())?;
        Some(self.canonical_app(raw))
    }

    /// The config's canonical name of an app (`[apps] aliases`), or the name as written.
    pub fn canonical_app(&self, raw: &str) -> String {
        if self.aliases.is_empty() {
            return raw.to_string();
        }
        self.aliases
            .get(crate::model::fold_case(raw).as_ref())
            .cloned()
            .unwrap_or_else(|| raw.to_string())
    }

    /// How this source reads actions ([`Reading::classify`]), as data: kept in the
    /// daemon's checkpoint, so a restart reads again only what a changed reading reads
    /// otherwise. Lists lowercased and sorted: the same for the same stages.
    pub fn reading(&self) -> Reading {
        let sorted = |list: &[String]| {
            let mut list: Vec<String> = list.iter().map(|a| a.to_ascii_lowercase()).collect();
            list.sort_unstable();
            list.dedup();
            list
        };
        // The first listing of an action is the one the parser takes (the config's before
        // the preset's).
        let mut seen = std::collections::HashSet::new();
        let mut stages: Vec<(String, Stage)> = (self.stages.iter())
            .filter(|(action, _)| seen.insert(action.as_str()))
            .cloned()
            .collect();
        stages.sort_unstable();
        Reading {
            trigger_source: self.role == Role::Trigger,
            stages,
            triggers: sorted(&self.triggers),
            returns: sorted(&self.returns),
        }
    }

    /// The stage `[source.stages]` (and the preset) give an action, if any.
    fn stage_of(&self, action: &str) -> Option<Stage> {
        self.stages
            .iter()
            .find(|(value, _)| value.eq_ignore_ascii_case(action))
            .map(|(_, stage)| *stage)
    }

    fn idp_status_of(&self, value: &str) -> Option<IdpStatus> {
        self.status
            .iter()
            .find(|(v, _)| v.eq_ignore_ascii_case(value))
            .map(|(_, status)| *status)
    }

    fn idp_record(&self, picked: &Picked<'_>, origin: Origin) -> Result<Record, ParseError> {
        let time = self.required_time(picked)?;
        let action = picked
            .text(Field::Action)
            .ok_or_else(|| ParseError::missing(Field::Action))?;
        let Some(stage) = self.stage_of(action) else {
            if self.triggers.iter().any(|t| t.eq_ignore_ascii_case(action)) {
                return self.trigger_from(picked, time, action, false, origin);
            }
            if self.returns.iter().any(|t| t.eq_ignore_ascii_case(action)) {
                return self.trigger_from(picked, time, action, true, origin);
            }
            if let Some((_, cause)) = self
                .causes
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(action))
            {
                return Ok(Record::Note(NoteRecord {
                    time,
                    operation_id: owned(picked.text(Field::OperationId)),
                    correlation_id: correlation_id(picked),
                    cause: *cause,
                    origin,
                }));
            }
            return Ok(Record::Ignored(time));
        };
        Ok(Record::Idp(IdpRecord {
            time,
            correlation_id: correlation_id(picked),
            operation_id: owned(picked.text(Field::OperationId)),
            action: action.to_string(),
            stage,
            app: self.app(picked),
            user_id: owned(picked.text(Field::UserId)),
            user_login: owned(picked.text(Field::UserLogin)),
            target_id: owned(picked.text(Field::TargetId)),
            status: picked
                .text(Field::Status)
                .and_then(|s| self.idp_status_of(s)),
            error: picked
                .text(Field::Error)
                .map(|e| redact::scrub(e).chars().take(500).collect()),
            trigger_time: self.time_of(picked, Field::TriggerTime)?,
            groups: groups_of(picked),
            origin,
        }))
    }

    fn gateway_record(&self, picked: &Picked<'_>, origin: Origin) -> Result<Record, ParseError> {
        let time = self.required_time(picked)?;
        let status_text = picked
            .text(Field::Status)
            .ok_or_else(|| ParseError::missing(Field::Status))?;
        let status = parse_status(status_text).ok_or_else(|| {
            ParseError::new(
                Reason::BadField,
                format!("status {status_text:?} is not an HTTP status"),
            )
        })?;
        let (method, path) = match (picked.text(Field::Method), picked.text(Field::Path)) {
            (Some(method), Some(path)) => (Method::parse(method), path),
            _ => {
                // nginx logs "-" for a client that sent no request line (a probe, a closed
                // connection): a request like a garbled one, not a bad line.
                let request = match picked.text(Field::Request) {
                    Some(request) => request,
                    None if self.mapped.contains(&Field::Request) => "",
                    None => return Err(ParseError::missing(Field::Method)),
                };
                // "$request" is "METHOD PATH PROTOCOL"; a garbled one (a TLS handshake sent to
                // a plain port) is kept as Other and never becomes an operation.
                let mut parts = request.split(' ');
                let method = Method::parse(parts.next().unwrap_or(""));
                (method, parts.next().unwrap_or(""))
            }
        };
        let duration_ms = match picked.text(Field::DurationMs) {
            Some(ms) => first_number(ms),
            None => picked
                .text(Field::DurationSecs)
                .and_then(first_number)
                .map(|s| s * 1000.0),
        };
        let body = picked.body();
        let response_body = picked.text(Field::ResponseBody).and_then(scim::parse_body);
        let resource = scim::resource_of(path);
        let write = scim::classify_resource_write(method, resource, body.as_ref());
        let resource_id = match resource {
            Some(scim::Resource::Users(Some(id)) | scim::Resource::Groups(Some(id)))
                if !id.starts_with('.') =>
            {
                Some(scim::percent_decode(id))
            }
            _ if write.is_some() && (200..300).contains(&status) => {
                scim::created_id(picked.text(Field::Location), response_body.as_ref())
            }
            _ => None,
        };
        let user_name = owned(picked.text(Field::UserName))
            .or_else(|| scim::user_name_of(path, resource, body.as_ref()))
            .filter(|name| !is_masked(name));
        let members = match resource {
            Some(scim::Resource::Groups(Some(_))) if write.is_some() => picked.group_members(),
            _ => Box::default(),
        };
        Ok(Record::Gateway(GatewayRecord {
            time,
            // API Gateway writes this in place of a client's request ID that was not a UUID.
            correlation_id: correlation_id(picked)
                .filter(|id| id != "UUID_REPLACED_INVALID_REQUEST_ID"),
            method,
            path: redact::redact_path(path).into_owned(),
            status,
            duration_ms,
            app: self.app(picked),
            principal: picked
                .text(Field::Principal)
                .map(|p| redact::scrub(p).into_owned()),
            user_name,
            resource_id,
            write,
            error_detail: response_body
                .as_ref()
                .and_then(scim::error_detail)
                .map(|d| redact::scrub(&d).into_owned()),
            members,
            origin,
        }))
    }

    fn trigger_record(&self, picked: &Picked<'_>, origin: Origin) -> Result<Record, ParseError> {
        let time = self.required_time(picked)?;
        let event = picked
            .text(Field::Event)
            .ok_or_else(|| ParseError::missing(Field::Event))?;
        let returns = match self.stage_of(event) {
            Some(Stage::Leaver) => false,
            Some(Stage::Joiner) => true,
            _ => return Ok(Record::Ignored(time)),
        };
        self.trigger_from(picked, time, event, returns, origin)
    }

    /// A trigger, or (`returns`) the user enabled again at the source of truth.
    fn trigger_from(
        &self,
        picked: &Picked<'_>,
        time: Ts,
        event: &str,
        returns: bool,
        origin: Origin,
    ) -> Result<Record, ParseError> {
        // A lifecycle event the source of truth logs as failed did not happen: the user is
        // still active there, and a clock started by it would run from an attempt.
        let status = picked
            .text(Field::Status)
            .and_then(|s| self.idp_status_of(s));
        if status == Some(IdpStatus::Failure) {
            return Ok(Record::Ignored(time));
        }
        let user_id = owned(picked.text(Field::UserId));
        let user_login = owned(picked.text(Field::UserLogin));
        if user_id.is_none() && user_login.is_none() {
            return Err(ParseError::new(
                Reason::MissingField,
                "no user_id or user_login field",
            ));
        }
        Ok(Record::Trigger(TriggerRecord {
            time,
            app: self.app(picked),
            user_id,
            user_login,
            event: event.to_string(),
            groups: groups_of(picked),
            returns,
            origin,
        }))
    }
}

/// AWS masks PII in CloudTrail's SCIM events.
fn is_masked(value: &str) -> bool {
    value == "HIDDEN_DUE_TO_SECURITY_REASONS"
}

fn owned(text: Option<&str>) -> Option<String> {
    text.map(str::to_string)
}

/// The record's correlation ID, with a credential in it replaced (see
/// [`redact::correlation_id`]): the field is the caller's to fill.
fn correlation_id(picked: &Picked<'_>) -> Option<String> {
    picked
        .text(Field::CorrelationId)
        .map(|id| redact::correlation_id(id).into_owned())
}

/// A decimal as `str::parse::<f64>` reads it, quickly for the common shape (`200`, `0.139`):
/// up to 15 digits with an optional fraction are an integer and a power of ten that `f64`
/// holds exactly, so one division rounds as the full parser does. Anything else is parsed.
fn parse_decimal(text: &str) -> Option<f64> {
    const POWERS: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let bytes = text.as_bytes();
    let (whole, fraction) = match bytes.iter().position(|&b| b == b'.') {
        Some(dot) => (&bytes[..dot], &bytes[dot + 1..]),
        None => (bytes, &[][..]),
    };
    let plain = |part: &[u8]| part.iter().all(u8::is_ascii_digit);
    let has_dot = whole.len() < bytes.len();
    if whole.is_empty()
        || (has_dot && fraction.is_empty())
        || whole.len() + fraction.len() > 15
        || !plain(whole)
        || !plain(fraction)
    {
        return text.parse().ok();
    }
    let mantissa = whole
        .iter()
        .chain(fraction)
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some(mantissa as f64 / POWERS[fraction.len()])
}

/// An HTTP status as logs write it: `200`, `"200"`, `200.0`; `0` means no response.
fn parse_status(text: &str) -> Option<u16> {
    let value = parse_decimal(crate::model::trim(text))?;
    if !(0.0..1000.0).contains(&value) || value.fract() != 0.0 {
        return None;
    }
    Some(value as u16)
}

/// The first number in a value like nginx's `$upstream_response_time` ("0.139, 0.002").
fn first_number(text: &str) -> Option<f64> {
    let separator = |c: u8| matches!(c, b',' | b':' | b' ');
    // Nearly always a single number: then it is the text itself (a split on a set of
    // characters cost ~85 instructions more a duration even with nothing to split).
    let first = if text.bytes().any(separator) {
        text.split(|c: char| u8::try_from(c).is_ok_and(separator))
            .find(|s| !s.trim().is_empty())?
    } else {
        text
    };
    let value = parse_decimal(crate::model::trim(first))?;
    (value.is_finite() && value >= 0.0).then_some(value)
}

/// Groups as a JSON array of strings or a comma-separated string.
fn groups_of(picked: &Picked<'_>) -> Vec<String> {
    match picked.get(Field::Groups) {
        Some(Value::Raw(raw)) => serde_json::from_str::<Vec<serde_json::Value>>(raw)
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        _ => picked
            .text(Field::Groups)
            .map(|text| {
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
