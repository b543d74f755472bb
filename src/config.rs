//! `scimwatch.toml`: the configuration contract of design.md, its defaults, and one
//! `validate()` that names the offending key and its line.
//!
//! Every field's `///` doc is the user documentation (README "Config reference" repeats it).
//! Units are in the names. Unknown keys are errors, so a typo never silently does nothing.

use crate::time::TimeFormat;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP listener for `/metrics`, `/healthz`, `/readyz` and `/api/v1/…`.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where checkpoints, alert state and Parquet evidence live.
    #[serde(default)]
    pub storage: StorageConfig,
    /// How the daemon tails, checkpoints and bounds its memory.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The log sources: at least one `idp` and one `gateway`.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Thresholds, windows and the high-risk leaver policy.
    #[serde(default)]
    pub slo: SloConfig,
    /// App names the two sides spell differently.
    #[serde(default)]
    pub apps: AppsConfig,
    /// Alert timing, severities, thresholds, delivery and the links pages carry.
    #[serde(default)]
    pub alerting: AlertingConfig,
    /// Where pages go.
    #[serde(default, rename = "receiver")]
    pub receivers: Vec<ReceiverConfig>,
    /// Which receiver gets which alert; first match wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// The directory of the config file; relative `paths` are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default: expose it on purpose, not by accident.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Environment variable holding a bearer token required on `/api/*` (optional).
    #[serde(default)]
    pub api_token_env: Option<String>,
    /// File holding a bearer token required on `/api/*` (optional).
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:9898".to_string()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            api_token_env: None,
            api_token_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for checkpoints, state and the Parquet tables.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/scimwatch")
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: default_data_dir(),
        }
    }
}

/// Where a field's value comes from: one pointer/capture, or several tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a JSON Pointer or capture name (a string), or a list of them tried in order"
)]
pub enum FieldSource {
    One(String),
    Many(Vec<String>),
}

impl FieldSource {
    /// The alternatives, in priority order (empty strings dropped).
    pub fn alternatives(&self) -> Vec<&str> {
        match self {
            FieldSource::One(one) => vec![one.as_str()],
            FieldSource::Many(many) => many.iter().map(String::as_str).collect(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// How often every source's globs are re-listed and every file stat'ed: the source of
    /// truth for new data (inotify only wakes the loop early).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Bytes read from one file per pass, so one busy file cannot starve the others.
    #[serde(default = "default_read_budget_bytes")]
    pub read_budget_bytes: usize,
    /// How often buffered rows are committed to Parquet and the checkpoint advanced: the most
    /// a crash can make the daemon re-read.
    #[serde(default = "default_checkpoint_interval_secs")]
    pub checkpoint_interval_secs: u64,
    /// Rows per Parquet file before a new one is started.
    #[serde(default = "default_parquet_rows_per_file")]
    pub parquet_rows_per_file: usize,
    /// Cap on operations and writes waiting for their join window. Past it the oldest is
    /// settled early (as unconfirmed / unattributed) and counted. About 230 bytes each.
    #[serde(default = "default_max_pending_joins")]
    pub max_pending_joins: usize,
    /// Cap on (app, resource id) ↔ userName pairs learned from gateway writes. Past it the
    /// pair learned first is forgotten (and learned again at the user's next such write).
    #[serde(default = "default_max_known_names")]
    pub max_known_names: usize,
    /// How many of the newest operations `/api/v1/operations/{id}` can look up.
    #[serde(default = "default_recent_operations")]
    pub recent_operations: usize,
    /// Cap on open leaver episodes. Past it the oldest is dropped (written if already
    /// breached) and counted. About 0.5 KiB each.
    #[serde(default = "default_max_open_episodes")]
    pub max_open_episodes: usize,
    /// How long a rotated-away or deleted file is kept open after its last line was read.
    #[serde(default = "default_rotate_wait_secs")]
    pub rotate_wait_secs: u64,
}

const fn default_poll_interval_ms() -> u64 {
    250
}
const fn default_read_budget_bytes() -> usize {
    1024 * 1024
}
const fn default_checkpoint_interval_secs() -> u64 {
    5
}
const fn default_parquet_rows_per_file() -> usize {
    100_000
}
const fn default_max_pending_joins() -> usize {
    1_000_000
}
const fn default_max_known_names() -> usize {
    1_000_000
}
const fn default_recent_operations() -> usize {
    100_000
}
const fn default_max_open_episodes() -> usize {
    100_000
}
const fn default_rotate_wait_secs() -> u64 {
    60
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            poll_interval_ms: default_poll_interval_ms(),
            read_budget_bytes: default_read_budget_bytes(),
            checkpoint_interval_secs: default_checkpoint_interval_secs(),
            parquet_rows_per_file: default_parquet_rows_per_file(),
            max_pending_joins: default_max_pending_joins(),
            max_known_names: default_max_known_names(),
            recent_operations: default_recent_operations(),
            max_open_episodes: default_max_open_episodes(),
            rotate_wait_secs: default_rotate_wait_secs(),
        }
    }
}

/// What a source's records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The IdP's provisioning log: what it tried and what it believes happened.
    Idp,
    /// The API gateway's log in front of the SCIM targets: what the target answered.
    Gateway,
    /// Lifecycle events at the source of truth that start the leaver clock.
    Trigger,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Idp => "idp",
            Role::Gateway => "gateway",
            Role::Trigger => "trigger",
        }
    }
    /// The record fields a source of this role can map.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Role::Idp => &[
                "time",
                "correlation_id",
                "operation_id",
                "action",
                "app",
                "user_id",
                "user_login",
                "target_id",
                "status",
                "error",
                "trigger_time",
                "groups",
            ],
            Role::Gateway => &[
                "time",
                "correlation_id",
                "method",
                "path",
                "status",
                "duration_ms",
                "duration_secs",
                "app",
                "principal",
                "user_name",
                "location",
                "body",
                "request",
                "response_body",
            ],
            Role::Trigger => &[
                "time",
                "app",
                "user_id",
                "user_login",
                "event",
                "status",
                "groups",
            ],
        }
    }
    /// Fields without which a line of this role cannot become a record.
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            Role::Idp => &["time", "action"],
            Role::Gateway => &["time", "status"],
            Role::Trigger => &["time", "event"],
        }
    }
}

/// One log source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name used in metric labels, errors and the report's `parse_errors`.
    pub name: String,
    /// `idp`, `gateway` or `trigger`.
    pub role: Role,
    /// A preset (`nginx_json`, `nginx_combined`) or a generic format (`json`, `regex`).
    pub format: String,
    /// Globs of the files to read; relative to the config file. Include rotated names
    /// (`access.log*`) so that lines rotated away while the daemon was down are still read.
    #[serde(default)]
    pub paths: Vec<String>,
    /// `format = "regex"` (or a regex preset): the pattern, with named captures for the fields.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Record field → JSON Pointer (json formats) or capture name (regex formats), or a list of
    /// them tried in order (the first present wins: one preset reads two shapes of a vendor's
    /// log). Overrides the preset's mapping; an empty string unsets a preset field.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSource>,
    /// Stage → the action values (IdP) or event values (trigger: `leaver`, and `joiner` for
    /// the user enabled again) meaning it. Matched case-insensitively. Replaces the preset's
    /// list for that stage.
    #[serde(default)]
    pub stages: BTreeMap<String, Vec<String>>,
    /// `success` / `failure` / `skipped` → the IdP status values meaning it (case-insensitive).
    #[serde(default)]
    pub status: BTreeMap<String, Vec<String>>,
    /// Cause → IdP action values that are not operations but say why the operation of the same
    /// `operation_id` failed (Okta's `application.integration.rate_limit_exceeded` →
    /// `rate_limited`).
    #[serde(default)]
    pub causes: BTreeMap<String, Vec<String>>,
    /// The app every record of this source belongs to, when the log does not say (a gateway
    /// in front of one app). A mapped `app` field wins over it.
    #[serde(default)]
    pub app: Option<String>,
    /// How times are written: `auto` (default), `rfc3339`, `epoch_secs`, `epoch_millis`, `clf`.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Lines longer than this are counted as `line_too_long` and skipped (default 1 MiB).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// How long this source may go without a line before SourceStale fires; 0 never. Unset:
    /// `alerting.stale_after_secs`, except for a trigger source (an HR feed is quiet for
    /// hours, and without it leaver clocks start at the IdP's operation: less exact, not
    /// blind), which is then never stale.
    #[serde(default)]
    pub stale_after_secs: Option<u64>,
}

impl SourceConfig {
    /// The SourceStale threshold of this source in seconds (0: never), given the default.
    pub fn stale_after(&self, default_secs: u64) -> u64 {
        match (self.stale_after_secs, self.role) {
            (Some(secs), _) => secs,
            (None, Role::Trigger) => 0,
            (None, _) => default_secs,
        }
    }
}

const fn default_max_line_bytes() -> usize {
    1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Success rate at or above which a stage is `healthy`.
    #[serde(default = "default_healthy_ratio")]
    pub healthy_ratio: f64,
    /// Success rate below which a stage is an `incident` (between the two: `degraded`).
    #[serde(default = "default_incident_ratio")]
    pub incident_ratio: f64,
    /// Fewer operations than this in a window: `insufficient_data`, and no SLO page.
    #[serde(default = "default_min_operations")]
    pub min_operations: u64,
    /// Window of the daemon's success rates and status alerts.
    #[serde(default = "default_evaluation_window_secs")]
    pub evaluation_window_secs: u64,
    /// How far apart (either way) an IdP record and its gateway attempts may be.
    #[serde(default = "default_join_window_secs")]
    pub join_window_secs: u64,
    /// Disable deadline for leavers that match no high-risk policy.
    #[serde(default = "default_standard_disable_within_secs")]
    pub standard_disable_within_secs: u64,
    /// Live mode: how far behind the newest event a late line may still be joined.
    #[serde(default = "default_allowed_lateness_secs")]
    pub allowed_lateness_secs: u64,
    /// High-risk leaver policies; the first that matches a leaver sets its deadline.
    #[serde(default)]
    pub high_risk: Vec<HighRiskPolicy>,
}

const fn default_healthy_ratio() -> f64 {
    0.99
}
const fn default_incident_ratio() -> f64 {
    0.95
}
const fn default_min_operations() -> u64 {
    20
}
const fn default_evaluation_window_secs() -> u64 {
    3600
}
const fn default_join_window_secs() -> u64 {
    600
}
const fn default_standard_disable_within_secs() -> u64 {
    86_400
}
const fn default_allowed_lateness_secs() -> u64 {
    60
}

impl Default for SloConfig {
    fn default() -> Self {
        SloConfig {
            healthy_ratio: default_healthy_ratio(),
            incident_ratio: default_incident_ratio(),
            min_operations: default_min_operations(),
            evaluation_window_secs: default_evaluation_window_secs(),
            join_window_secs: default_join_window_secs(),
            standard_disable_within_secs: default_standard_disable_within_secs(),
            allowed_lateness_secs: default_allowed_lateness_secs(),
            high_risk: Vec::new(),
        }
    }
}

/// A high-risk leaver policy. A leaver matches when any of its patterns matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighRiskPolicy {
    /// Glob patterns over app names (`aws-prod`, `github*`).
    #[serde(default)]
    pub apps: Vec<String>,
    /// Glob patterns over the user's login or id (`admin-*@corp.example`).
    #[serde(default)]
    pub users: Vec<String>,
    /// Glob patterns over the user's groups (mapped `groups` field of the IdP or trigger).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The disable deadline for leavers this policy matches.
    #[serde(default = "default_high_risk_disable_within_secs")]
    pub disable_within_secs: u64,
}

const fn default_high_risk_disable_within_secs() -> u64 {
    900
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppsConfig {
    /// Canonical app name → other spellings the sources use for it.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
}

impl AppsConfig {
    /// Each spelling, lowercased, to its canonical name (a canonical name to itself).
    pub fn alias_map(&self) -> std::collections::HashMap<String, String> {
        let mut aliases = std::collections::HashMap::new();
        for (canonical, spellings) in &self.aliases {
            aliases.insert(canonical.to_lowercase(), canonical.clone());
            for spelling in spellings {
                aliases.insert(spelling.to_lowercase(), canonical.clone());
            }
        }
        aliases
    }

    /// The spellings `before` gave a name these aliases do not give them (taken out, or moved
    /// to another app), each as `spelling (was name[, now other])`, sorted: what was read
    /// under them keeps the old name (the spelling as read is not kept).
    pub fn lost_since(&self, before: &AppsConfig) -> Vec<String> {
        let now = self.alias_map();
        let mut lost: Vec<String> = (before.alias_map().into_iter())
            .filter(|(spelling, canonical)| {
                *spelling != crate::model::fold_case(canonical)
                    && now.get(spelling) != Some(canonical)
            })
            .map(|(spelling, canonical)| match now.get(&spelling) {
                Some(now) => format!("{spelling} (was {canonical}, now {now})"),
                None => format!("{spelling} (was {canonical})"),
            })
            .collect();
        lost.sort();
        lost
    }

    /// The canonical name of an app the aliases give another (a name read under an older
    /// config, kept in a checkpoint); `None` for one they leave as it is.
    pub fn renamer(&self) -> impl Fn(&str) -> Option<String> {
        let aliases = self.alias_map();
        move |app: &str| {
            let canonical = aliases.get(crate::model::fold_case(app).as_ref())?;
            (canonical != app).then(|| canonical.clone())
        }
    }
}

/// The alert kinds of design.md, in its order.
pub const ALERT_KINDS: [&str; 8] = [
    "StageSuccessIncident",
    "StageSuccessDegraded",
    "ErrorBudgetBurn",
    "LeaverDisableOverdue",
    "PostDisableActivity",
    "ScimAuthFailures",
    "UnattributedWrites",
    "SourceStale",
];

/// How alerts are judged and delivered (`[alerting]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// A condition must hold this long before it pages.
    pub hold_secs: u64,
    /// A firing alert resolves only after its condition has been gone this long.
    pub keep_firing_secs: u64,
    /// A firing alert is sent again this often.
    pub repeat_interval_secs: u64,
    /// A new group (receiver + alert kind) waits this long to gather what fires together.
    pub group_wait_secs: u64,
    /// A group already notified sends again no sooner than this.
    pub group_interval_secs: u64,
    /// Severity per alert kind, overriding design.md's defaults (e.g. `ErrorBudgetBurn = "ticket"`).
    pub severity: BTreeMap<String, String>,
    /// ScimAuthFailures: this many 401/403 from one app within `auth_failure_window_secs`.
    pub auth_failure_threshold: u64,
    pub auth_failure_window_secs: u64,
    /// UnattributedWrites: any gateway write without an IdP record within this window.
    pub unattributed_window_secs: u64,
    /// PostDisableActivity: any request as a disabled user within this window.
    pub post_disable_window_secs: u64,
    /// SourceStale: no line from a source for this long (while everything is read).
    pub stale_after_secs: u64,
    /// Linked from every page; `#<alert kind, lower case>` is appended.
    pub runbook_url: String,
    /// The Grafana dashboard, linked from every page.
    pub dashboard_url: Option<String>,
    /// Every SMTP or HTTP send is abandoned (and retried) after this long.
    pub send_timeout_secs: u64,
    /// A notification that cannot be delivered for this long goes to the dead-letter file.
    pub retry_for_secs: u64,
    /// Backoff between retries doubles from one second up to this (with jitter).
    pub retry_max_backoff_secs: u64,
    /// Notifications waiting for delivery; beyond this they are dead-lettered, never blocking.
    pub queue_capacity: usize,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            hold_secs: 0,
            keep_firing_secs: 600,
            repeat_interval_secs: 4 * 3600,
            group_wait_secs: 30,
            group_interval_secs: 300,
            severity: BTreeMap::new(),
            auth_failure_threshold: 3,
            auth_failure_window_secs: 900,
            unattributed_window_secs: 3600,
            post_disable_window_secs: 600,
            stale_after_secs: 900,
            runbook_url: "https://github.com/scimwatch/scimwatch/blob/main/README.md#alerts".into(),
            dashboard_url: None,
            send_timeout_secs: 30,
            retry_for_secs: 6 * 3600,
            retry_max_backoff_secs: 300,
            queue_capacity: 1024,
        }
    }
}

impl AlertingConfig {
    /// The severity of an alert kind: the override, else design.md's default.
    pub fn severity_of(&self, alert: &str, default: &str) -> String {
        self.severity
            .get(alert)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }
}

/// A destination for pages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Name that routes refer to.
    pub name: String,
    /// Email over SMTP.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// An HTTP webhook in a receiver's own format.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text: tests and loopback relays only.
    None,
    /// Upgrade with STARTTLS; never downgrades.
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:port`.
    pub smtp_url: String,
    /// `none`, `starttls` or `implicit`.
    pub tls: SmtpTls,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Environment variable holding the SMTP user name.
    #[serde(default)]
    pub username_env: Option<String>,
    /// File holding the SMTP user name.
    #[serde(default)]
    pub username_file: Option<PathBuf>,
    /// Environment variable holding the SMTP password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the SMTP password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of CA certificates trusted beside the public roots: a relay whose certificate
    /// a private (corporate) CA signed. Needs `tls` = `starttls` or `implicit`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Alertmanager webhook v4 body.
    Alertmanager,
    /// Alertmanager `POST /api/v2/alerts`.
    AlertmanagerApi,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Slack incoming webhook.
    Slack,
    /// scimwatch's own JSON.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST. A URL that is itself a secret (Slack's) belongs in `url_env`/`url_file`.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// File holding the URL.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Body format.
    pub format: WebhookFormat,
    /// File holding the PagerDuty routing key.
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    /// Environment variable holding the PagerDuty routing key.
    #[serde(default)]
    pub routing_key_env: Option<String>,
    /// PEM file of CA certificates trusted beside the public roots, for an `https://`
    /// receiver whose certificate a private (corporate) CA signed.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Label matchers: `alert`, `stage`, `app`, `severity`. Empty matches every alert.
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Name of the receiver.
    pub receiver: String,
}

/// Whether an `smtp://host:port` URL names a loopback host (`localhost`, 127.0.0.0/8, ::1),
/// read as the relay's transport reads it.
fn smtp_host_is_loopback(url: &str) -> bool {
    crate::notify::send::host_port(url).is_ok_and(|(host, _)| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// A configuration problem, naming the key and (when found) its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
            None => write!(f, "`{}`: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            key: "--config".into(),
            line: None,
            message: format!("cannot read {}: {error}", path.display()),
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::from_toml(&text, &base_dir)
    }

    /// Parses and validates config text; `base_dir` anchors relative paths.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|error| toml_error(text, &error))?;
        config.base_dir = base_dir.to_path_buf();
        // Relative paths are relative to the config file (clarification 18), not to wherever
        // the daemon happens to be started from.
        if config.storage.data_dir.is_relative() {
            config.storage.data_dir = base_dir.join(&config.storage.data_dir);
        }
        if let Some(file) = config.server.api_token_file.as_mut() {
            if file.is_relative() {
                *file = base_dir.join(&*file);
            }
        }
        for receiver in &mut config.receivers {
            let email = receiver.email.as_mut().into_iter().flat_map(|e| {
                [
                    e.username_file.as_mut(),
                    e.password_file.as_mut(),
                    e.ca_file.as_mut(),
                ]
            });
            let webhook = receiver.webhook.as_mut().into_iter().flat_map(|w| {
                [
                    w.url_file.as_mut(),
                    w.routing_key_file.as_mut(),
                    w.ca_file.as_mut(),
                ]
            });
            for file in email.chain(webhook).flatten() {
                if file.is_relative() {
                    *file = base_dir.join(&*file);
                }
            }
        }
        config.validate().map_err(|mut error| {
            error.line = line_of_key(text, &error.key);
            error
        })?;
        Ok(config)
    }

    /// Checks everything serde cannot: ranges, references, formats, field names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            key,
            line: None,
            message,
        };
        let at_most = |key: &str, value: u64, max: u64| {
            if value > max {
                return Err(err(
                    key.into(),
                    format!("{value} is more than the maximum {max}"),
                ));
            }
            Ok(())
        };
        let Ok(listen) = self.server.listen.parse::<std::net::SocketAddr>() else {
            return Err(err(
                "server.listen".into(),
                format!("{:?} is not an address:port", self.server.listen),
            ));
        };
        // /api/v1 shows user logins and correlation IDs: beyond loopback, only behind a token.
        if !listen.ip().is_loopback()
            && self.server.api_token_env.is_none()
            && self.server.api_token_file.is_none()
        {
            return Err(err(
                "server.listen".into(),
                format!(
                    "{listen} is reachable beyond this machine, and /api/v1 (user logins, \
                     correlation IDs) would be open to anyone who can reach it: set \
                     server.api_token_env or server.api_token_file (/metrics and the health \
                     checks stay open for scrapers), or listen on 127.0.0.1"
                ),
            ));
        }
        // Each spelling names one app: a spelling under two names, or a name that is another's
        // spelling (a chain), was settled by the names' order, silently (QA helper-64).
        let mut named: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
        for (canonical, spellings) in &self.apps.aliases {
            let key = format!("apps.aliases.{canonical}");
            if canonical.trim().is_empty() {
                return Err(err(key, "an app's name must not be empty".into()));
            }
            for spelling in std::iter::once(canonical).chain(spellings) {
                if spelling.trim().is_empty() {
                    return Err(err(key, "a spelling must not be empty".into()));
                }
                let folded = spelling.to_lowercase();
                match named.insert(folded, canonical) {
                    Some(other) if other != canonical => {
                        return Err(err(
                            key,
                            format!(
                                "{spelling:?} already names {other:?} (names and spellings are \
                                 compared ignoring case, and each names one app: list every \
                                 spelling under the one name)"
                            ),
                        ));
                    }
                    _ => {}
                }
            }
        }
        if !self.sources.iter().any(|s| s.role == Role::Idp) {
            return Err(err("source".into(), "no source has role = \"idp\"".into()));
        }
        if !self.sources.iter().any(|s| s.role == Role::Gateway) {
            return Err(err(
                "source".into(),
                "no source has role = \"gateway\"".into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (index, source) in self.sources.iter().enumerate() {
            let key = |field: &str| format!("source[{index}].{field}");
            if source.name.is_empty()
                || !source
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(err(
                    key("name"),
                    format!(
                        "{:?} must be non-empty letters, digits, '_' or '-'",
                        source.name
                    ),
                ));
            }
            if !names.insert(source.name.as_str()) {
                return Err(err(key("name"), format!("{:?} is used twice", source.name)));
            }
            crate::parse::resolve_source(source, &self.apps)
                .map_err(|(field, message)| err(key(&field), message))?;
            if source.max_line_bytes < 64 {
                return Err(err(key("max_line_bytes"), "must be at least 64".into()));
            }
            // As `alerting.stale_after_secs`; 0 is allowed here: never stale.
            if let Some(secs) = source.stale_after_secs {
                at_most(&key("stale_after_secs"), secs, 30 * 86_400)?;
            }
            for pattern in &source.paths {
                glob::Pattern::new(pattern)
                    .map_err(|e| err(key("paths"), format!("{pattern:?} is not a glob: {e}")))?;
            }
        }
        let pipeline = &self.pipeline;
        for (name, value) in [
            ("pipeline.poll_interval_ms", pipeline.poll_interval_ms),
            (
                "pipeline.checkpoint_interval_secs",
                pipeline.checkpoint_interval_secs,
            ),
            (
                "pipeline.read_budget_bytes",
                pipeline.read_budget_bytes as u64,
            ),
            (
                "pipeline.parquet_rows_per_file",
                pipeline.parquet_rows_per_file as u64,
            ),
            (
                "pipeline.max_pending_joins",
                pipeline.max_pending_joins as u64,
            ),
            (
                "pipeline.max_open_episodes",
                pipeline.max_open_episodes as u64,
            ),
            ("pipeline.max_known_names", pipeline.max_known_names as u64),
            (
                "pipeline.recent_operations",
                pipeline.recent_operations as u64,
            ),
        ] {
            if value == 0 {
                return Err(err(name.into(), "must be greater than 0".into()));
            }
        }
        let slo = &self.slo;
        for (name, value) in [
            ("slo.healthy_ratio", slo.healthy_ratio),
            ("slo.incident_ratio", slo.incident_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) || value.is_nan() {
                return Err(err(
                    name.into(),
                    format!("{value} is not a ratio in [0, 1]"),
                ));
            }
        }
        if slo.incident_ratio > slo.healthy_ratio {
            return Err(err(
                "slo.incident_ratio".into(),
                format!(
                    "{} is above slo.healthy_ratio {}: incident must be the lower threshold",
                    slo.incident_ratio, slo.healthy_ratio
                ),
            ));
        }
        // A burn tier whose factor × the error budget is over 1 would need more than 100%
        // errors: it could never fire (slo-alerting.md §1: the loader rejects it).
        let budget = 1.0 - slo.healthy_ratio;
        let tiers = crate::alert::conditions::BURN_TIERS;
        if let Some((tier, long, short, factor, _)) = tiers.iter().find(|t| t.3 * budget > 1.0) {
            let window = crate::alert::conditions::window_name;
            let lowest = (1.0 - 1.0 / tiers.iter().map(|t| t.3).fold(0.0, f64::max)) * 1e4;
            return Err(err(
                "slo.healthy_ratio".into(),
                format!(
                    "{} leaves an error budget of {:.1}%: the {tier} burn tier ({factor}× over {} and {}) would need more than 100% errors and could never fire; use at least {:.4}",
                    slo.healthy_ratio,
                    budget * 100.0,
                    window(*long),
                    window(*short),
                    lowest.ceil() / 1e4
                ),
            ));
        }
        for (name, value) in [
            ("slo.evaluation_window_secs", slo.evaluation_window_secs),
            ("slo.join_window_secs", slo.join_window_secs),
            (
                "slo.standard_disable_within_secs",
                slo.standard_disable_within_secs,
            ),
        ] {
            if value == 0 {
                return Err(err(name.into(), "must be greater than 0".into()));
            }
        }
        // A join window or lateness of years would hold every write pending for ever: joins
        // never settle. A day is far past any provisioning retry.
        const DAY: u64 = 86_400;
        for (name, value, max) in [
            ("slo.join_window_secs", slo.join_window_secs, DAY),
            ("slo.allowed_lateness_secs", slo.allowed_lateness_secs, DAY),
            (
                "slo.evaluation_window_secs",
                slo.evaluation_window_secs,
                30 * DAY,
            ),
            (
                "slo.standard_disable_within_secs",
                slo.standard_disable_within_secs,
                365 * DAY,
            ),
        ] {
            at_most(name, value, max)?;
        }
        for (index, policy) in slo.high_risk.iter().enumerate() {
            let key = |field: &str| format!("slo.high_risk[{index}].{field}");
            if policy.apps.is_empty() && policy.users.is_empty() && policy.groups.is_empty() {
                return Err(err(
                    key("apps"),
                    "a policy needs at least one of apps, users, groups".into(),
                ));
            }
            for (field, patterns) in [
                ("apps", &policy.apps),
                ("users", &policy.users),
                ("groups", &policy.groups),
            ] {
                for pattern in patterns {
                    glob::Pattern::new(pattern)
                        .map_err(|e| err(key(field), format!("{pattern:?} is not a glob: {e}")))?;
                }
            }
            if policy.disable_within_secs == 0 {
                return Err(err(
                    key("disable_within_secs"),
                    "must be greater than 0".into(),
                ));
            }
            at_most(
                &key("disable_within_secs"),
                policy.disable_within_secs,
                365 * DAY,
            )?;
        }
        let mut receiver_names = std::collections::BTreeSet::new();
        for (index, receiver) in self.receivers.iter().enumerate() {
            let key = |field: &str| format!("receiver[{index}].{field}");
            if !receiver_names.insert(receiver.name.as_str()) {
                return Err(err(
                    key("name"),
                    format!("{:?} is used twice", receiver.name),
                ));
            }
            if receiver.email.is_none() && receiver.webhook.is_none() {
                return Err(err(
                    key("name"),
                    "a receiver needs [receiver.email] or [receiver.webhook]".into(),
                ));
            }
            if let Some(email) = &receiver.email {
                for (field, env, file) in [
                    (
                        "username",
                        email.username_env.is_some(),
                        email.username_file.is_some(),
                    ),
                    (
                        "password",
                        email.password_env.is_some(),
                        email.password_file.is_some(),
                    ),
                ] {
                    if env && file {
                        return Err(err(
                            key(&format!("email.{field}_file")),
                            format!("set one of {field}_env and {field}_file, not both"),
                        ));
                    }
                }
                // First, and without echoing the URL: it may hold a password.
                if email.smtp_url.contains('@') {
                    return Err(err(
                        key("email.smtp_url"),
                        "credentials do not belong in the URL: use username_env/password_file"
                            .into(),
                    ));
                }
                if !email.smtp_url.starts_with("smtp://") && !email.smtp_url.starts_with("smtps://")
                {
                    return Err(err(
                        key("email.smtp_url"),
                        format!("{:?} must start with smtp:// or smtps://", email.smtp_url),
                    ));
                }
                if email.smtp_url.starts_with("smtps://") && email.tls != SmtpTls::Implicit {
                    return Err(err(
                        key("email.tls"),
                        "an smtps:// URL is TLS from the first byte: tls = \"implicit\"".into(),
                    ));
                }
                if email.to.is_empty() {
                    return Err(err(key("email.to"), "needs at least one recipient".into()));
                }
                // Credentials in clear text cross only loopback: `none` is for a local relay.
                let has_credentials = email.username_env.is_some()
                    || email.username_file.is_some()
                    || email.password_env.is_some()
                    || email.password_file.is_some();
                if email.tls == SmtpTls::None
                    && has_credentials
                    && !smtp_host_is_loopback(&email.smtp_url)
                {
                    return Err(err(
                        key("email.tls"),
                        "\"none\" would send the SMTP password in clear text to a relay that is \
                         not on loopback: use \"starttls\" or \"implicit\""
                            .into(),
                    ));
                }
                if email.ca_file.is_some() && email.tls == SmtpTls::None {
                    return Err(err(
                        key("email.ca_file"),
                        "a CA file needs tls = \"starttls\" or \"implicit\"".into(),
                    ));
                }
            }
            if let Some(webhook) = &receiver.webhook {
                let sources = [
                    webhook.url.is_some(),
                    webhook.url_env.is_some(),
                    webhook.url_file.is_some(),
                ];
                if sources.iter().filter(|s| **s).count() != 1 {
                    return Err(err(
                        key("webhook.url"),
                        "set exactly one of url, url_env, url_file".into(),
                    ));
                }
                if webhook.routing_key_env.is_some() && webhook.routing_key_file.is_some() {
                    return Err(err(
                        key("webhook.routing_key_file"),
                        "set one of routing_key_env and routing_key_file, not both".into(),
                    ));
                }
                if webhook.format != WebhookFormat::Pagerduty
                    && (webhook.routing_key_env.is_some() || webhook.routing_key_file.is_some())
                {
                    return Err(err(
                        key("webhook.routing_key_file"),
                        "a routing key is for format = \"pagerduty\" only".into(),
                    ));
                }
                if let Some(url) = &webhook.url {
                    // Without echoing the URL: it may hold a password.
                    let authority = url
                        .split_once("://")
                        .map_or(url.as_str(), |(_, rest)| rest)
                        .split(['/', '?', '#'])
                        .next()
                        .unwrap_or("");
                    if authority.contains('@') {
                        return Err(err(
                            key("webhook.url"),
                            "credentials do not belong in the URL: give the whole URL in url_env \
                             or url_file"
                                .into(),
                        ));
                    }
                    if !url.starts_with("http://") && !url.starts_with("https://") {
                        return Err(err(
                            key("webhook.url"),
                            format!("{url:?} must be an http(s) URL"),
                        ));
                    }
                    if webhook.ca_file.is_some() && !url.starts_with("https://") {
                        return Err(err(
                            key("webhook.ca_file"),
                            "a CA file needs an https:// url".into(),
                        ));
                    }
                }
                if webhook.format == WebhookFormat::Pagerduty
                    && webhook.routing_key_file.is_none()
                    && webhook.routing_key_env.is_none()
                {
                    return Err(err(
                        key("webhook.routing_key_file"),
                        "pagerduty needs routing_key_file or routing_key_env".into(),
                    ));
                }
            }
        }
        let alerting = &self.alerting;
        for (alert, severity) in &alerting.severity {
            if !ALERT_KINDS.contains(&alert.as_str()) {
                return Err(err(
                    format!("alerting.severity.{alert}"),
                    format!(
                        "unknown alert kind (expected one of {})",
                        ALERT_KINDS.join(", ")
                    ),
                ));
            }
            if severity.is_empty()
                || !severity
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(
                    format!("alerting.severity.{alert}"),
                    format!("{severity:?} is not a severity (e.g. page, ticket)"),
                ));
            }
        }
        for (name, value) in [
            (
                "alerting.auth_failure_threshold",
                alerting.auth_failure_threshold,
            ),
            (
                "alerting.auth_failure_window_secs",
                alerting.auth_failure_window_secs,
            ),
            (
                "alerting.unattributed_window_secs",
                alerting.unattributed_window_secs,
            ),
            (
                "alerting.post_disable_window_secs",
                alerting.post_disable_window_secs,
            ),
            ("alerting.stale_after_secs", alerting.stale_after_secs),
            ("alerting.send_timeout_secs", alerting.send_timeout_secs),
            (
                "alerting.retry_max_backoff_secs",
                alerting.retry_max_backoff_secs,
            ),
            ("alerting.queue_capacity", alerting.queue_capacity as u64),
            (
                "alerting.repeat_interval_secs",
                alerting.repeat_interval_secs,
            ),
        ] {
            if value == 0 {
                return Err(err(name.into(), "must be greater than 0".into()));
            }
        }
        for (name, value, max) in [
            ("alerting.hold_secs", alerting.hold_secs, 30 * DAY),
            (
                "alerting.keep_firing_secs",
                alerting.keep_firing_secs,
                30 * DAY,
            ),
            (
                "alerting.repeat_interval_secs",
                alerting.repeat_interval_secs,
                30 * DAY,
            ),
            ("alerting.group_wait_secs", alerting.group_wait_secs, DAY),
            (
                "alerting.group_interval_secs",
                alerting.group_interval_secs,
                DAY,
            ),
            (
                "alerting.send_timeout_secs",
                alerting.send_timeout_secs,
                600,
            ),
            ("alerting.retry_for_secs", alerting.retry_for_secs, 7 * DAY),
            (
                "alerting.retry_max_backoff_secs",
                alerting.retry_max_backoff_secs,
                DAY,
            ),
            (
                "alerting.queue_capacity",
                alerting.queue_capacity as u64,
                1_000_000,
            ),
            (
                "alerting.auth_failure_window_secs",
                alerting.auth_failure_window_secs,
                3 * DAY,
            ),
            (
                "alerting.unattributed_window_secs",
                alerting.unattributed_window_secs,
                3 * DAY,
            ),
            (
                "alerting.post_disable_window_secs",
                alerting.post_disable_window_secs,
                3 * DAY,
            ),
            (
                "alerting.stale_after_secs",
                alerting.stale_after_secs,
                30 * DAY,
            ),
        ] {
            at_most(name, value, max)?;
        }
        for (name, url) in [
            ("alerting.runbook_url", Some(&alerting.runbook_url)),
            ("alerting.dashboard_url", alerting.dashboard_url.as_ref()),
        ] {
            if let Some(url) = url {
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(err(name.into(), format!("{url:?} must be an http(s) URL")));
                }
            }
        }
        // A severity of its own that no route can match sends the alert nowhere: a typo
        // (`LeaverDisableOverdue = "pgae"`) was valid, and the page went to no receiver
        // (QA helper-54). With no routes every receiver gets everything, and any name is a
        // label.
        if !self.routes.is_empty() {
            for (alert, severity) in &self.alerting.severity {
                let builtin = ["page", "ticket"].contains(&severity.as_str());
                let routed = self.routes.iter().any(|route| {
                    let holds =
                        |key: &str, value: &str| route.matchers.get(key).is_none_or(|v| v == value);
                    holds("alert", alert) && holds("severity", severity)
                });
                if !builtin && !routed {
                    return Err(err(
                        format!("alerting.severity.{alert}"),
                        format!(
                            "{severity:?} is neither page nor ticket, and no route matches {alert} with it: it would reach no receiver"
                        ),
                    ));
                }
            }
        }
        for (index, route) in self.routes.iter().enumerate() {
            if !receiver_names.contains(route.receiver.as_str()) {
                return Err(err(
                    format!("route[{index}].receiver"),
                    format!("no receiver is named {:?}", route.receiver),
                ));
            }
            // A value no alert can have routes nothing: a typo (`LeaverOverdue`) sent a page
            // nowhere and check-config called the file valid.
            let severities: std::collections::BTreeSet<&str> = ["page", "ticket"]
                .into_iter()
                .chain(self.alerting.severity.values().map(String::as_str))
                .collect();
            for (matcher, value) in &route.matchers {
                let key = format!("route[{index}].match.{matcher}");
                let known: Option<Vec<&str>> = match matcher.as_str() {
                    "alert" => Some(ALERT_KINDS.to_vec()),
                    "stage" => Some(vec!["joiner", "mover", "leaver"]),
                    "severity" => Some(severities.iter().copied().collect()),
                    "app" => None,
                    _ => {
                        return Err(err(
                            format!("route[{index}].match"),
                            format!(
                                "unknown key {matcher:?} (expected alert, stage, app, severity)"
                            ),
                        ))
                    }
                };
                if let Some(known) = known {
                    if !known.contains(&value.as_str()) {
                        return Err(err(
                            key,
                            format!(
                                "{value:?} matches no alert (expected one of {})",
                                known.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// A source's globs, made absolute against the config's directory.
    pub fn source_globs(&self, source: &SourceConfig) -> Vec<String> {
        source
            .paths
            .iter()
            .map(|p| {
                if Path::new(p).is_absolute() {
                    p.clone()
                } else {
                    self.base_dir.join(p).to_string_lossy().into_owned()
                }
            })
            .collect()
    }
}

fn toml_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = error.message().to_string();
    // The span points at an unknown key, or at a value of the wrong type or range: either
    // way the key is what its line has before `=`, in the table whose header is above it.
    let key = error
        .span()
        .and_then(|span| key_at(text, span.start))
        .or_else(|| {
            error
                .span()
                .and_then(|span| text.get(span))
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty() && s.len() < 80 && !s.contains('\n'))
        })
        .unwrap_or_else(|| "(file)".into());
    ConfigError { key, line, message }
}

/// The dotted key written on the line holding byte `at` (`slo.min_operations`,
/// `receiver[0].email.tls`): the text before its `=`, under the nearest table header above
/// (an array of tables' entries counted from 0). `None` off a `key = value` line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let (name, _) = line.split_once('=')?;
    let name = name.trim().trim_matches('"');
    if name.is_empty() || name.starts_with('[') || name.starts_with('#') {
        return None;
    }
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['));
    let Some(header) = header else {
        return Some(name.to_string());
    };
    // `[[receiver]]`'s entry above the line, as `receiver[i]`.
    let entry = |table: &str| {
        let wanted = format!("[[{table}]]");
        let index = text[..line_start]
            .lines()
            .filter(|l| l.trim() == wanted)
            .count()
            .saturating_sub(1);
        format!("{table}[{index}]")
    };
    let table = match header.strip_prefix("[[") {
        Some(rest) => entry(rest.split("]]").next().unwrap_or_default().trim()),
        None => {
            let table = header.trim_start_matches('[').split(']').next();
            let table = table.unwrap_or_default().trim();
            match table.split_once('.') {
                // `[receiver.email]` under the last `[[receiver]]`: `receiver[i].email`.
                Some((parent, rest)) if text.contains(&format!("[[{parent}]]")) => {
                    format!("{}.{rest}", entry(parent))
                }
                _ => table.to_string(),
            }
        }
    };
    Some(format!("{table}.{name}"))
}

/// A secret's environment variable, or what is wrong with it ("environment variable X is not
/// set"), for a message that names the key before it.
pub fn env_secret(var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|e| match e {
        std::env::VarError::NotPresent => format!("environment variable {var} is not set"),
        std::env::VarError::NotUnicode(_) => format!("environment variable {var} is not UTF-8"),
    })
}

/// A table header line as written without its comment and spaces (`[[receiver]]  # pages`
/// and `[ source.fields ]` are `[[receiver]]` and `[source.fields]`); any other line trimmed.
fn header_of(line: &str) -> String {
    let trimmed = line.trim();
    if !trimmed.starts_with('[') {
        return trimmed.to_string();
    }
    let close = if trimmed.starts_with("[[") { "]]" } else { "]" };
    match trimmed.find(close) {
        Some(end) => trimmed[..end + close.len()]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
        None => trimmed.to_string(),
    }
}

/// Finds the line of a dotted key like `source[1].fields.time` or `slo.join_window_secs` by
/// walking the table headers in the text. Good enough to point a person at the right line;
/// `None` when the key is not written (a default that conflicts with another key).
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    // Split "source[1].fields.time" into ("source", Some(1)), then ["fields", "time"].
    let mut parts: Vec<&str> = key.split('.').collect();
    if parts.is_empty() {
        return None;
    }
    let head = parts.remove(0);
    let (table, index) = match head.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
        None => (head, None),
    };
    let lines: Vec<&str> = text.lines().collect();
    // Locate the start of the table (or the n-th array-of-tables entry).
    let mut start = None;
    let mut seen = 0;
    for (number, line) in lines.iter().enumerate() {
        let trimmed = header_of(line);
        let is_entry = match index {
            Some(_) => trimmed == format!("[[{table}]]"),
            None => trimmed == format!("[{table}]"),
        };
        if is_entry {
            if index.is_none_or(|i| i == seen) {
                start = Some(number);
                break;
            }
            seen += 1;
        }
    }
    let mut position = start?;
    let mut remaining: &[&str] = &parts;
    // Nested tables like `[source.fields]` or `[[slo.high_risk]]` come after the entry header.
    while remaining.len() > 1 {
        let (name, nested_index) = match remaining[0].split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (remaining[0], None),
        };
        let header_single = format!("[{table}.{name}]");
        let header_array = format!("[[{table}.{name}]]");
        let mut found = None;
        let mut count = 0;
        for (offset, line) in lines[position..].iter().enumerate() {
            let trimmed = header_of(line);
            if trimmed == header_single
                || (trimmed == header_array && nested_index.is_none_or(|i| i == count))
            {
                found = Some(position + offset);
                break;
            }
            if trimmed == header_array {
                count += 1;
            }
            if offset > 0 && trimmed.starts_with("[[") && trimmed == format!("[[{table}]]") {
                break;
            }
        }
        match found {
            Some(line) => position = line,
            None => break,
        }
        remaining = &remaining[1..];
    }
    let leaf = remaining.last().copied().unwrap_or("");
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    for (offset, line) in lines[position..].iter().enumerate() {
        let trimmed = line.trim_start();
        if offset > 0 && trimmed.starts_with('[') {
            break;
        }
        if let Some(rest) = trimmed.strip_prefix(leaf) {
            if rest.trim_start().starts_with('=') {
                return Some(position + offset + 1);
            }
        }
    }
    Some(position + 1)
}

#[cfg(test)]
mod tests {
    use super::line_of_key;

    /// A header with a comment after it, as design.md's own example has
    /// (`[[receiver]]   # where pages go`), or spaces inside its brackets, is still that
    /// header: the key was named at another receiver's line (QA helper-32).
    #[test]
    fn a_key_is_found_under_a_header_with_a_comment_or_spaces() {
        let text = "[[receiver]]   # where pages go\nname = \"a\"\n[receiver.email]\nusername_env = \"A\"\n\n[[ receiver ]]\nname = \"b\"\n[ receiver.email ] # b's\nusername_env = \"B\"\n";
        assert_eq!(line_of_key(text, "receiver[0].email.username_env"), Some(4));
        assert_eq!(line_of_key(text, "receiver[1].email.username_env"), Some(9));
        assert_eq!(line_of_key(text, "receiver[1].name"), Some(7));
    }
}
