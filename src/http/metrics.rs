//! Every Prometheus metric of design.md, in one struct built at start-up (prometheus-client).
//!
//! Labels are bounded: `stage`, `outcome`, `cause`, `risk`, `window`, `source`, `reason`,
//! `table` are enums; `app` takes the names the config knows plus the first
//! [`MAX_APPS`] others that an IdP record names, then `other`: a write nothing on the IdP side
//! claims (its app may come from a client's `Host` header) can use a name already known but
//! never take a slot. Never a user or a correlation ID. Known label
//! sets are created at zero so `rate()` sees the first increment.

use crate::config::Config;
use crate::model::{Cause, Outcome, Stage};
use crate::parse::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// Distinct `app` label values taken from the logs before the rest become `other`.
pub const MAX_APPS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub stage: String,
    pub app: String,
    pub outcome: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub app: String,
    pub risk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RiskLabels {
    pub risk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageWindowLabels {
    pub stage: String,
    pub window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ParseErrorLabels {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    /// `joins`, `episodes` or `names`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileStateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub alert: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Leaver latency buckets: seconds to days, with exact edges at 15 minutes and 24 hours so the
/// SLO lines are bucket boundaries (`le="900"`, `le="86400"`).
const LATENCY_BUCKETS: [f64; 14] = [
    5.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0, 43_200.0,
    86_400.0, 259_200.0,
];
const LAG_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 2400.0, 3600.0,
];

/// The daemon's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub operations: Family<OperationLabels, Counter>,
    pub leaver_disable_latency: Family<LatencyLabels, Histogram>,
    pub leavers_open: Family<RiskLabels, Gauge>,
    pub leavers_overdue: Family<RiskLabels, Gauge>,
    pub leaver_oldest_open_age: Family<RiskLabels, FloatGauge>,
    pub stage_success_ratio: Family<StageWindowLabels, FloatGauge>,
    pub stage_slo_status: Family<StageLabels, Gauge>,
    pub unattributed_writes: Family<AppLabels, Counter>,
    pub disagreements: Family<AppLabels, Counter>,
    pub post_disable_requests: Family<AppLabels, Counter>,
    pub provisioning_lag: Family<AppLabels, Histogram>,
    pub lines: Family<SourceLabels, Counter>,
    pub parse_errors: Family<ParseErrorLabels, Counter>,
    pub source_last_event: Family<SourceLabels, FloatGauge>,
    pub source_stale_after: Family<SourceLabels, Gauge>,
    pub join_pending: Gauge,
    pub log_files: Family<FileStateLabels, Gauge>,
    pub parquet_rows: Family<TableLabels, Counter>,
    pub notifications: Family<ChannelLabels, Counter>,
    pub alerts_firing: Family<AlertLabels, Gauge>,
    pub evictions: Family<EvictionLabels, Counter>,
    /// The `app` values in use, and how many of them came from the logs (not the config).
    apps: Mutex<(BTreeSet<String>, usize)>,
}

/// The alert kinds of design.md (for `scimwatch_alerts_firing{alert}`).
pub use crate::config::ALERT_KINDS;

/// Numeric `scimwatch_stage_slo_status`: 0 healthy, 1 degraded, 2 incident, -1 insufficient data.
pub fn status_value(status: crate::report::SloStatus) -> i64 {
    match status {
        crate::report::SloStatus::Healthy => 0,
        crate::report::SloStatus::Degraded => 1,
        crate::report::SloStatus::Incident => 2,
        crate::report::SloStatus::InsufficientData => -1,
    }
}

impl Metrics {
    pub fn new(config: &Config) -> Metrics {
        let mut registry = Registry::with_prefix("scimwatch");
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "operations",
            "Judged provisioning operations, by stage, app, outcome and cause",
            operations.clone(),
        );
        let leaver_disable_latency =
            Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS)
            });
        registry.register(
            "leaver_disable_latency_seconds",
            "Leaver disable latency: first 2xx disable minus the episode's start",
            leaver_disable_latency.clone(),
        );
        let leavers_open = Family::<RiskLabels, Gauge>::default();
        registry.register(
            "leavers_open",
            "Leaver episodes not yet disabled",
            leavers_open.clone(),
        );
        let leavers_overdue = Family::<RiskLabels, Gauge>::default();
        registry.register(
            "leavers_overdue",
            "Open leaver episodes past their deadline",
            leavers_overdue.clone(),
        );
        let leaver_oldest_open_age = Family::<RiskLabels, FloatGauge>::default();
        registry.register(
            "leaver_oldest_open_age_seconds",
            "Age of the oldest open leaver episode (0 when none is open)",
            leaver_oldest_open_age.clone(),
        );
        let stage_success_ratio = Family::<StageWindowLabels, FloatGauge>::default();
        registry.register("stage_success_ratio", "Succeeded / (succeeded + failed + unconfirmed) over the window, from exact counts; absent when the window has no operations", stage_success_ratio.clone());
        let stage_slo_status = Family::<StageLabels, Gauge>::default();
        registry.register("stage_slo_status", "Stage status over the evaluation window: 0 healthy, 1 degraded, 2 incident, -1 insufficient data", stage_slo_status.clone());
        let unattributed_writes = Family::<AppLabels, Counter>::default();
        registry.register(
            "unattributed_writes",
            "Gateway SCIM writes no IdP record claims",
            unattributed_writes.clone(),
        );
        let disagreements = Family::<AppLabels, Counter>::default();
        registry.register(
            "disagreements",
            "Operations whose IdP claim contradicts the target's answer",
            disagreements.clone(),
        );
        let post_disable_requests = Family::<AppLabels, Counter>::default();
        registry.register(
            "post_disable_requests",
            "Requests authenticated as a user after their account was disabled",
            post_disable_requests.clone(),
        );
        let provisioning_lag =
            Family::<AppLabels, Histogram>::new_with_constructor(|| Histogram::new(LAG_BUCKETS));
        registry.register(
            "provisioning_lag_seconds",
            "Gateway time minus IdP time of an operation's first attempt",
            provisioning_lag.clone(),
        );
        let lines = Family::<SourceLabels, Counter>::default();
        registry.register("lines", "Lines read, per source", lines.clone());
        let parse_errors = Family::<ParseErrorLabels, Counter>::default();
        registry.register(
            "parse_errors",
            "Lines set aside, per source and reason",
            parse_errors.clone(),
        );
        let source_last_event = Family::<SourceLabels, FloatGauge>::default();
        registry.register(
            "source_last_event_timestamp_seconds",
            "Event time of the newest parsed line, per source",
            source_last_event.clone(),
        );
        let source_stale_after = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "source_stale_after_seconds",
            "How long a source may go without a line before SourceStale fires (0: never)",
            source_stale_after.clone(),
        );
        let join_pending = Gauge::default();
        registry.register(
            "join_pending",
            "Operations and writes waiting for their join window",
            join_pending.clone(),
        );
        let log_files = Family::<FileStateLabels, Gauge>::default();
        registry.register(
            "log_files",
            "Log files by state: open, closed with their position kept (parked), and waiting \
             for a descriptor (at the limit of open files: raise it if this stays above 0)",
            log_files.clone(),
        );
        let evictions = Family::<EvictionLabels, Counter>::default();
        registry.register(
            "evictions",
            "Pending state a memory cap dropped: joins settled early, open episodes written \
             early, learned id-userName pairs forgotten",
            evictions.clone(),
        );
        let parquet_rows = Family::<TableLabels, Counter>::default();
        registry.register(
            "parquet_rows",
            "Rows committed to the Parquet audit tables",
            parquet_rows.clone(),
        );
        let notifications = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications per channel (email, webhook) and result: sent, retried (an attempt that will be retried), failed (dead-lettered), dropped (queue full and outbox unwritable)",
            notifications.clone(),
        );
        let alerts_firing = Family::<AlertLabels, Gauge>::default();
        registry.register(
            "alerts_firing",
            "Alerts currently firing, per alert kind",
            alerts_firing.clone(),
        );

        let metrics = Metrics {
            registry,
            operations,
            leaver_disable_latency,
            leavers_open,
            leavers_overdue,
            leaver_oldest_open_age,
            stage_success_ratio,
            stage_slo_status,
            unattributed_writes,
            disagreements,
            post_disable_requests,
            provisioning_lag,
            lines,
            parse_errors,
            source_last_event,
            source_stale_after,
            join_pending,
            log_files,
            parquet_rows,
            notifications,
            alerts_firing,
            evictions,
            apps: Mutex::new((BTreeSet::new(), 0)),
        };
        metrics.initialise(config);
        metrics
    }

    /// Creates the known label sets at zero.
    fn initialise(&self, config: &Config) {
        let mut apps: BTreeSet<String> = config.apps.aliases.keys().cloned().collect();
        apps.extend(config.sources.iter().filter_map(|s| s.app.clone()));
        for policy in &config.slo.high_risk {
            apps.extend(
                policy
                    .apps
                    .iter()
                    .filter(|a| !a.contains(['*', '?', '[']))
                    .cloned(),
            );
        }
        if let Ok(mut known) = self.apps.lock() {
            known.0.extend(apps.iter().cloned());
        }
        // `other` and `unknown` too: the first increment of a series that did not exist is
        // one `increase()` cannot see.
        for app in apps.iter().map(String::as_str).chain(["other", "unknown"]) {
            self.zero_app(app);
        }
        // (Not `leavers_overdue`: it first appears with the pipeline's first count, so a
        // restarted daemon scraped before then shows no series, which the rules' overdue
        // alert holds through, rather than a 0 that resolved it and paged it again at the
        // next scrape: helper-58.)
        for risk in ["high", "standard"] {
            self.leavers_open
                .get_or_create(&RiskLabels { risk: risk.into() })
                .set(0);
        }
        for stage in Stage::ALL {
            self.stage_slo_status
                .get_or_create(&StageLabels {
                    stage: stage.as_str().into(),
                })
                .set(-1);
        }
        for source in &config.sources {
            self.lines
                .get_or_create(&SourceLabels {
                    source: source.name.clone(),
                })
                .inc_by(0);
            for reason in Reason::ALL {
                self.parse_errors
                    .get_or_create(&ParseErrorLabels {
                        source: source.name.clone(),
                        reason: reason.as_str().into(),
                    })
                    .inc_by(0);
            }
        }
        for kind in ["joins", "episodes", "names"] {
            self.evictions
                .get_or_create(&EvictionLabels { kind: kind.into() })
                .inc_by(0);
        }
        for table in crate::audit::schema::Table::ALL.map(|t| t.name()) {
            self.parquet_rows
                .get_or_create(&TableLabels {
                    table: table.into(),
                })
                .inc_by(0);
        }
        for channel in ["email", "webhook"] {
            for result in ["sent", "retried", "failed", "dropped"] {
                self.notifications
                    .get_or_create(&ChannelLabels {
                        channel: channel.into(),
                        result: result.into(),
                    })
                    .inc_by(0);
            }
        }
        for alert in ALERT_KINDS {
            self.alerts_firing
                .get_or_create(&AlertLabels {
                    alert: alert.into(),
                })
                .set(0);
        }
    }

    /// Creates every per-app series of `app` at zero (its stage × outcome × cause counts, its
    /// latency, lag, unattributed, disagreement and post-disable series), so that the rules'
    /// `increase()` sees its first events.
    fn zero_app(&self, app: &str) {
        let app = app.to_string();
        for stage in Stage::ALL {
            for (outcome, cause) in valid_outcome_causes() {
                self.operations
                    .get_or_create(&OperationLabels {
                        stage: stage.as_str().into(),
                        app: app.clone(),
                        outcome: outcome.into(),
                        cause: cause.into(),
                    })
                    .inc_by(0);
            }
        }
        for risk in ["high", "standard"] {
            // Touching the family creates the series with empty buckets.
            let _ = self
                .leaver_disable_latency
                .get_or_create(&LatencyLabels {
                    app: app.clone(),
                    risk: risk.into(),
                })
                .clone();
        }
        let _ = self
            .provisioning_lag
            .get_or_create(&AppLabels { app: app.clone() })
            .clone();
        let app = AppLabels { app: app.clone() };
        self.unattributed_writes.get_or_create(&app).inc_by(0);
        self.disagreements.get_or_create(&app).inc_by(0);
        self.post_disable_requests.get_or_create(&app).inc_by(0);
    }

    /// The `app` label for an app name an IdP record (or the config) vouches for: bounded (see
    /// the module docs).
    pub fn app_label(&self, app: Option<&str>) -> String {
        self.label_of(app, true)
    }

    /// The `app` label for an app name only the gateway gives (an unattributed write): a name
    /// already in use, else `other`.
    pub fn unclaimed_app_label(&self, app: Option<&str>) -> String {
        self.label_of(app, false)
    }

    fn label_of(&self, app: Option<&str>, may_admit: bool) -> String {
        match app.filter(|a| !a.is_empty()) {
            None => "unknown".into(),
            Some(app) if self.admit(app, may_admit) => app.to_string(),
            Some(_) => "other".into(),
        }
    }

    /// Whether `app` is its own label: known, or (with `may_admit`) given a free slot now, its
    /// series created at zero. One lock, nothing allocated for a name already known.
    fn admit(&self, app: &str, may_admit: bool) -> bool {
        let Ok(mut known) = self.apps.lock() else {
            return false;
        };
        let (names, learned) = &mut *known;
        if names.contains(app) {
            return true;
        }
        if !may_admit || *learned >= MAX_APPS {
            return false;
        }
        names.insert(app.to_string());
        *learned += 1;
        drop(known);
        self.zero_app(app);
        true
    }

    /// An IdP record names `app`: it takes an `app` label slot now (if one is free), and its
    /// series start at zero, a join window before its first operation is judged, so the
    /// rules' `increase()` counts that operation (a series born with its first count hides
    /// it).
    pub fn claim_app(&self, app: &str) {
        self.admit(app, true);
    }

    /// The app names with a label of their own (the config's and those learned), for a
    /// checkpoint to keep.
    pub fn labelled_apps(&self) -> Vec<String> {
        (self.apps.lock()).map_or_else(|_| Vec::new(), |known| known.0.iter().cloned().collect())
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The (outcome, cause) pairs that can occur.
fn valid_outcome_causes() -> Vec<(&'static str, &'static str)> {
    let mut pairs = vec![
        ("succeeded", "none"),
        ("skipped", "none"),
        ("unattributed", "none"),
        // An unattributed write refused with 401/403: ScimAuthFailures counts it.
        ("unattributed", "unauthorized"),
        ("unattributed", "forbidden"),
        ("unconfirmed", "unconfirmed"),
    ];
    for cause in Cause::ALL {
        if cause != Cause::Unconfirmed {
            pairs.push(("failed", cause.as_str()));
        }
    }
    pairs
}

/// The `outcome`/`cause` labels of an operation.
pub fn outcome_labels(outcome: Outcome, cause: Option<Cause>) -> (&'static str, &'static str) {
    (outcome.as_str(), cause.map_or("none", Cause::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An app an IdP record names mid-run gets all its series at zero then, a join window
    /// before its first operation is judged: the rules' `increase()` sees that operation (a
    /// series born with its first count hid it, and the rules read whole lifetimes instead).
    #[test]
    fn an_app_the_idp_names_starts_at_zero_before_its_first_operation() {
        let config = Config::from_toml(
            "[[source]]\nname = \"idp\"\nrole = \"idp\"\nformat = \"okta\"\npaths = [\"i\"]\n\
             [[source]]\nname = \"gw\"\nrole = \"gateway\"\nformat = \"nginx_json\"\npaths = [\"g\"]\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let metrics = Metrics::new(&config);
        assert!(!metrics.encode().contains("app=\"zoom\""));
        metrics.claim_app("zoom");
        let text = metrics.encode();
        for series in [
            "scimwatch_operations_total{stage=\"leaver\",app=\"zoom\",outcome=\"failed\",cause=\"unauthorized\"} 0",
            "scimwatch_post_disable_requests_total{app=\"zoom\"} 0",
            "scimwatch_unattributed_writes_total{app=\"zoom\"} 0",
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
    }

    /// The QA pass's flood: 70 writes to made-up apps that no IdP record claims took every
    /// slot, and the real apps that came next were counted as `other`. The config's own
    /// names do not count against the slots either.
    #[test]
    fn only_names_an_idp_record_claims_take_app_label_slots() {
        let config = Config::from_toml(
            "[[source]]\nname = \"idp\"\nrole = \"idp\"\nformat = \"okta\"\npaths = [\"i\"]\n\
             [[source]]\nname = \"gw\"\nrole = \"gateway\"\nformat = \"nginx_json\"\npaths = [\"g\"]\n\
             [apps.aliases]\nslack = []\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let metrics = Metrics::new(&config);
        for i in 0..70 {
            let name = format!("evil-{i}");
            assert_eq!(metrics.unclaimed_app_label(Some(&name)), "other");
        }
        assert_eq!(metrics.unclaimed_app_label(Some("slack")), "slack");
        for i in 0..MAX_APPS {
            let name = format!("real-{i}");
            assert_eq!(metrics.app_label(Some(&name)), name);
            // Once claimed, a name is its own label for unattributed writes too.
            assert_eq!(metrics.unclaimed_app_label(Some(&name)), name);
        }
        assert_eq!(metrics.app_label(Some("one-too-many")), "other");
        // `other` (and `unknown`) start at zero like the config's apps.
        assert!(metrics
            .encode()
            .contains("scimwatch_unattributed_writes_total{app=\"other\"} 0"));
        assert_eq!(metrics.app_label(Some("slack")), "slack");
        assert_eq!(metrics.app_label(None), "unknown");
    }
}
