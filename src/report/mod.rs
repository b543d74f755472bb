//! The replay report: the stable JSON of design.md ("Report"), built from the engine's outputs.
//!
//! Keys listed in design.md keep their meaning; extra keys (`cancelled`, samples, line counts)
//! are additions. `success_rate` is `null` for a stage with no operations and latency
//! quantiles are `null` with no closed episode: 0 would claim something that did not happen.

pub mod text;

use crate::config::SloConfig;
use crate::engine::Output;
use crate::judge::{Episode, EpisodeState, Operation, PostDisableActivity};
use crate::model::{Cause, Outcome, Stage};
use crate::source::{ErrorSample, IngestStats};
use crate::time::Ts;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// How many sample correlation IDs / records each section keeps.
const SAMPLES: usize = 5;

/// A stage's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SloStatus {
    Healthy,
    Degraded,
    Incident,
    InsufficientData,
}

impl SloStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SloStatus::Healthy => "healthy",
            SloStatus::Degraded => "degraded",
            SloStatus::Incident => "incident",
            SloStatus::InsufficientData => "insufficient_data",
        }
    }

    /// design.md "Status": healthy ≥ healthy_ratio > degraded ≥ incident_ratio > incident;
    /// fewer than `min_operations` operations is `insufficient_data` (clarification 8).
    pub fn judge(succeeded: u64, operations: u64, slo: &SloConfig) -> SloStatus {
        if operations < slo.min_operations || operations == 0 {
            return SloStatus::InsufficientData;
        }
        let ratio = succeeded as f64 / operations as f64;
        if ratio >= slo.healthy_ratio {
            SloStatus::Healthy
        } else if ratio >= slo.incident_ratio {
            SloStatus::Degraded
        } else {
            SloStatus::Incident
        }
    }
}

/// Counts of one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageReport {
    pub operations: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub unconfirmed: u64,
    pub success_rate: Option<f64>,
    pub status: SloStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreachedLeaver {
    pub app: String,
    pub user: String,
    pub user_id: Option<String>,
    pub high_risk: bool,
    pub initiated_at: Ts,
    pub disabled_at: Option<Ts>,
    pub latency_seconds: Option<f64>,
    pub deadline_seconds: u64,
    pub state: EpisodeState,
    pub correlation_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leavers {
    pub episodes: u64,
    pub disabled: u64,
    pub open: u64,
    pub cancelled: u64,
    pub breaches: u64,
    pub latency_seconds: Latency,
    pub breached: Vec<BreachedLeaver>,
}

/// A cause with its hint and a few operations to look at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CauseSummary {
    pub cause: Cause,
    pub count: u64,
    pub hint: &'static str,
    pub samples: Vec<String>,
}

/// An operation shown as an example (disagreements, unattributed writes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationSample {
    pub correlation_id: Option<String>,
    pub stage: Stage,
    pub app: Option<String>,
    pub user: Option<String>,
    pub time: Ts,
    pub method: Option<String>,
    pub path: Option<String>,
    pub http_status: Option<u16>,
    pub idp_status: Option<&'static str>,
}

impl OperationSample {
    fn of(op: &Operation) -> OperationSample {
        OperationSample {
            correlation_id: op.correlation_id.clone(),
            stage: op.stage,
            app: op.app.clone(),
            user: op.user().map(str::to_string),
            time: op.time,
            method: op.method.map(|m| m.as_str().to_string()),
            path: op.path.clone(),
            http_status: op.http_status,
            idp_status: op.idp_status.map(|s| s.as_str()),
        }
    }
}

/// The report (`replay --format json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub as_of: Option<Ts>,
    pub stages: BTreeMap<&'static str, StageReport>,
    pub causes: BTreeMap<&'static str, u64>,
    pub skipped: u64,
    pub unattributed: u64,
    pub disagreements: u64,
    pub leavers: Leavers,
    pub post_disable_activity: Vec<PostDisableActivity>,
    pub parse_errors: BTreeMap<String, u64>,
    /// Additions beyond design.md's keys.
    pub top_causes: Vec<CauseSummary>,
    pub disagreement_samples: Vec<OperationSample>,
    pub unattributed_samples: Vec<OperationSample>,
    pub lines: BTreeMap<String, u64>,
    /// Operations by how they were joined, and writes more than one operation could claim.
    pub joins: BTreeMap<&'static str, u64>,
    pub parse_errors_by_reason: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub parse_error_samples: Vec<ErrorSample>,
    pub one_sided_apps: OneSidedApps,
}

/// Apps only one side names: the IdP's operations for `idp` never reached the gateway (all
/// unconfirmed, none answered), and the gateway's writes for `gateway` match no IdP record
/// (all unattributed). Both at once is most often one app under two names (Okta's app label,
/// the gateway's host): `[apps] aliases` maps them. At most [`ONE_SIDED_SHOWN`] names each.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OneSidedApps {
    pub idp: Vec<String>,
    pub gateway: Vec<String>,
}

/// How many names each list of [`OneSidedApps`] keeps.
const ONE_SIDED_SHOWN: usize = 20;

/// How many app names the report tallies for [`OneSidedApps`] (the first seen).
const APPS_TALLIED: usize = 1024;

/// What each side said of one app, for [`OneSidedApps`].
#[derive(Debug, Default, Clone, Copy)]
struct AppSides {
    /// IdP operations the gateway never answered.
    unconfirmed: u64,
    /// Operations with at least one gateway attempt joined to an IdP record.
    answered: u64,
    /// Gateway writes no IdP record claims.
    unattributed: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct StageCounts {
    succeeded: u64,
    failed: u64,
    unconfirmed: u64,
}

/// Accumulates engine outputs into a report.
pub struct ReportBuilder {
    slo: SloConfig,
    stages: BTreeMap<Stage, StageCounts>,
    causes: BTreeMap<Cause, (u64, Vec<String>)>,
    skipped: u64,
    unattributed: u64,
    disagreements: u64,
    disagreement_samples: Vec<OperationSample>,
    unattributed_samples: Vec<OperationSample>,
    leavers: LeaverTally,
    post_disable: Vec<PostDisableActivity>,
    join_methods: BTreeMap<&'static str, u64>,
    apps: crate::model::FastMap<String, AppSides>,
}

/// Leaver latency quantiles (clarification 11): an HDR histogram with 3 significant digits,
/// recorded in milliseconds and read back in seconds to 3 significant digits, so 0.834 s is
/// 0.834 and not 1. Auto-resizing, so a leaver disabled after months still counts. (Before
/// manifests said `latency_resolution_ms` it was whole seconds, clamped past 2,047.)
pub struct LatencyQuantiles {
    histogram: Histogram<u64>,
    resolution_ms: u64,
    max: Option<f64>,
}

impl LatencyQuantiles {
    /// The resolution every report and manifest now uses.
    pub const RESOLUTION_MS: u64 = 1;

    /// `resolution_ms` is [`Self::RESOLUTION_MS`], or 1000 to work out a figure as packs made
    /// before the field had it (whole seconds, read back unrounded).
    pub fn new(resolution_ms: u64) -> LatencyQuantiles {
        LatencyQuantiles {
            histogram: Histogram::<u64>::new(3).expect("3 significant digits is valid"),
            resolution_ms: resolution_ms.max(1),
            max: None,
        }
    }

    pub fn record(&mut self, seconds: f64) {
        let units = (seconds * 1000.0 / self.resolution_ms as f64).round() as u64;
        // `record` grows the histogram; `saturating_record` never does, and clamped every
        // latency past its first 2,047 units to 2 (a leaver disabled after an hour read 2 s).
        // The whole-second figures of older packs are worked out as they were made.
        if self.resolution_ms == 1000 || self.histogram.record(units).is_err() {
            self.histogram.saturating_record(units);
        }
        self.max = Some(self.max.map_or(seconds, |m| m.max(seconds)));
    }

    /// `value_at_quantile`, in seconds; `None` with nothing recorded.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.histogram.is_empty() {
            return None;
        }
        let value = self.histogram.value_at_quantile(q);
        if self.resolution_ms == 1000 {
            return Some(value as f64);
        }
        // The middle of the value's bucket, to 3 digits: the top (what `value_at_quantile`
        // gives) read 5 s as 5.001 and 12.345 s as 12.4.
        let value = self.histogram.median_equivalent(value);
        let seconds = significant_3((value * self.resolution_ms) as f64 / 1000.0);
        // Never past the exact longest (3 digits of 86,461 s read 86,500).
        Some(self.max.map_or(seconds, |max| seconds.min(max)))
    }

    /// The longest latency recorded, exactly.
    pub fn max(&self) -> Option<f64> {
        self.max
    }
}

/// `x` to 3 significant digits: what the histogram holds, without the bucket's top digits
/// (5.000 s reads back as the top of its bucket, 5.001).
fn significant_3(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let shift = 2 - x.abs().log10().floor() as i32;
    if shift >= 0 {
        let scale = 10f64.powi(shift);
        (x * scale).round() / scale
    } else {
        let scale = 10f64.powi(-shift);
        (x / scale).round() * scale
    }
}

/// Leaver episodes folded as they end: a year's replay holds the open ones (whose breach
/// depends on `as_of`) and the breached ones (which the report lists), not every episode.
struct LeaverTally {
    latency: LatencyQuantiles,
    episodes: u64,
    disabled: u64,
    cancelled: u64,
    /// Ended episodes over their deadline, with their arrival number: listed in the order
    /// (initiated_at, app, user), ties in arrival order.
    breached: Vec<(u64, BreachedLeaver)>,
    open: Vec<(u64, Episode)>,
}

impl LeaverTally {
    fn new() -> LeaverTally {
        LeaverTally {
            latency: LatencyQuantiles::new(LatencyQuantiles::RESOLUTION_MS),
            episodes: 0,
            disabled: 0,
            cancelled: 0,
            breached: Vec::new(),
            open: Vec::new(),
        }
    }

    fn add(&mut self, episode: &Episode) {
        let arrival = self.episodes;
        self.episodes += 1;
        match episode.state {
            EpisodeState::Open => {
                self.open.push((arrival, episode.clone()));
                return;
            }
            EpisodeState::Disabled => self.disabled += 1,
            EpisodeState::Cancelled => self.cancelled += 1,
        }
        self.record(arrival, episode, Ts::default());
    }

    /// Counts an episode's latency and lists it if breached (`as_of` matters for open ones only).
    fn record(&mut self, arrival: u64, episode: &Episode, as_of: Ts) {
        if let Some(latency) = episode.latency_seconds() {
            self.latency.record(latency);
        }
        if episode.breached(as_of) {
            self.breached.push((
                arrival,
                BreachedLeaver {
                    app: episode.app.clone(),
                    user: episode.user().to_string(),
                    user_id: episode.user_id.clone(),
                    high_risk: episode.high_risk,
                    initiated_at: episode.initiated_at,
                    disabled_at: episode.disabled_at,
                    latency_seconds: episode.latency_seconds(),
                    deadline_seconds: episode.deadline_seconds,
                    state: episode.state,
                    correlation_ids: episode.correlation_ids.clone(),
                },
            ));
        }
    }

    fn finish(mut self, as_of: Option<Ts>) -> Leavers {
        let as_of = as_of.unwrap_or_default();
        let open = std::mem::take(&mut self.open);
        for (arrival, episode) in &open {
            self.record(*arrival, episode, as_of);
        }
        self.breached.sort_by(|(a_arrival, a), (b_arrival, b)| {
            (a.initiated_at, &a.app, &a.user, a_arrival).cmp(&(
                b.initiated_at,
                &b.app,
                &b.user,
                b_arrival,
            ))
        });
        let quantile = |q: f64| self.latency.quantile(q);
        Leavers {
            episodes: self.episodes,
            disabled: self.disabled,
            open: open.len() as u64,
            cancelled: self.cancelled,
            breaches: self.breached.len() as u64,
            latency_seconds: Latency {
                p50: quantile(0.50),
                p95: quantile(0.95),
                p99: quantile(0.99),
                max: self.latency.max(),
            },
            breached: self.breached.into_iter().map(|(_, b)| b).collect(),
        }
    }
}

impl ReportBuilder {
    pub fn new(slo: &SloConfig) -> ReportBuilder {
        ReportBuilder {
            slo: slo.clone(),
            stages: Stage::ALL
                .iter()
                .map(|s| (*s, StageCounts::default()))
                .collect(),
            causes: BTreeMap::new(),
            skipped: 0,
            unattributed: 0,
            disagreements: 0,
            disagreement_samples: Vec::new(),
            unattributed_samples: Vec::new(),
            leavers: LeaverTally::new(),
            post_disable: Vec::new(),
            join_methods: crate::join::JoinMethod::ALL
                .iter()
                .map(|m| (m.as_str(), 0))
                .collect(),
            apps: Default::default(),
        }
    }

    pub fn add(&mut self, output: &Output) {
        match output {
            Output::Operation(op) => self.add_operation(op),
            Output::Episode(episode) => self.leavers.add(episode),
            Output::PostDisable(activity) => self.post_disable.push(activity.clone()),
        }
    }

    fn add_operation(&mut self, op: &Operation) {
        *self
            .join_methods
            .entry(op.join_method.as_str())
            .or_default() += 1;
        let counts = self.stages.entry(op.stage).or_default();
        match op.outcome {
            Outcome::Succeeded => counts.succeeded += 1,
            Outcome::Failed => counts.failed += 1,
            Outcome::Unconfirmed => counts.unconfirmed += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Unattributed => {
                self.unattributed += 1;
                if self.unattributed_samples.len() < SAMPLES {
                    self.unattributed_samples.push(OperationSample::of(op));
                }
            }
        }
        if let Some(app) = op.app.as_deref() {
            let count: Option<fn(&mut AppSides)> = match op.outcome {
                Outcome::Unconfirmed => Some(|s| s.unconfirmed += 1),
                Outcome::Unattributed => Some(|s| s.unattributed += 1),
                _ if !op.attempts.is_empty() => Some(|s| s.answered += 1),
                _ => None,
            };
            if let Some(count) = count {
                // Bounded: a gateway's writes may name any Host a client sends.
                let room = self.apps.len() < APPS_TALLIED;
                match self.apps.get_mut(app) {
                    Some(sides) => count(sides),
                    None if room => count(self.apps.entry(app.to_string()).or_default()),
                    None => {}
                }
            }
        }
        // Causes count failed and unconfirmed operations only (clarification 1).
        if matches!(op.outcome, Outcome::Failed | Outcome::Unconfirmed) {
            if let Some(cause) = op.cause {
                let entry = self.causes.entry(cause).or_default();
                entry.0 += 1;
                if entry.1.len() < SAMPLES {
                    if let Some(cid) = &op.correlation_id {
                        entry.1.push(cid.clone());
                    }
                }
            }
        }
        if op.disagreement {
            self.disagreements += 1;
            if self.disagreement_samples.len() < SAMPLES {
                self.disagreement_samples.push(OperationSample::of(op));
            }
        }
    }

    /// Finishes the report as of `as_of`.
    pub fn build(
        mut self,
        as_of: Option<Ts>,
        stats: &IngestStats,
        join: crate::join::JoinStats,
    ) -> Report {
        let mut joins = std::mem::take(&mut self.join_methods);
        joins.insert("ambiguous", join.ambiguous);
        let stages = self
            .stages
            .iter()
            .map(|(stage, c)| {
                let operations = c.succeeded + c.failed + c.unconfirmed;
                (
                    stage.as_str(),
                    StageReport {
                        operations,
                        succeeded: c.succeeded,
                        failed: c.failed,
                        unconfirmed: c.unconfirmed,
                        success_rate: (operations > 0)
                            .then(|| c.succeeded as f64 / operations as f64),
                        status: SloStatus::judge(c.succeeded, operations, &self.slo),
                    },
                )
            })
            .collect();
        let causes = Cause::ALL
            .iter()
            .map(|c| (c.as_str(), self.causes.get(c).map_or(0, |e| e.0)))
            .collect();
        let mut top_causes: Vec<CauseSummary> = self
            .causes
            .iter()
            .map(|(cause, (count, samples))| CauseSummary {
                cause: *cause,
                count: *count,
                hint: cause.hint(),
                samples: samples.clone(),
            })
            .collect();
        top_causes.sort_by(|a, b| b.count.cmp(&a.count).then(a.cause.cmp(&b.cause)));

        let leavers = self.leavers.finish(as_of);
        self.post_disable
            .sort_by(|a, b| (a.time, &a.app, &a.user).cmp(&(b.time, &b.app, &b.user)));
        let mut parse_errors = BTreeMap::new();
        let mut parse_errors_by_reason = BTreeMap::new();
        let mut lines = BTreeMap::new();
        let mut parse_error_samples = Vec::new();
        for (name, source) in &stats.sources {
            parse_errors.insert(name.clone(), source.error_count());
            lines.insert(name.clone(), source.lines);
            parse_errors_by_reason.insert(
                name.clone(),
                source
                    .errors
                    .iter()
                    .map(|(r, n)| (r.as_str(), *n))
                    .collect(),
            );
            parse_error_samples.extend(source.samples.iter().cloned());
        }
        Report {
            as_of,
            stages,
            causes,
            skipped: self.skipped,
            unattributed: self.unattributed,
            disagreements: self.disagreements,
            leavers,
            post_disable_activity: self.post_disable,
            parse_errors,
            top_causes,
            disagreement_samples: self.disagreement_samples,
            unattributed_samples: self.unattributed_samples,
            lines,
            joins,
            parse_errors_by_reason,
            parse_error_samples,
            one_sided_apps: one_sided(&self.apps),
        }
    }
}

/// [`OneSidedApps`] from the tally, names sorted.
fn one_sided(apps: &crate::model::FastMap<String, AppSides>) -> OneSidedApps {
    let names = |keep: fn(&AppSides) -> bool| {
        let mut names: Vec<String> = apps
            .iter()
            .filter(|(_, sides)| keep(sides))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names.truncate(ONE_SIDED_SHOWN);
        names
    };
    OneSidedApps {
        idp: names(|s| s.unconfirmed > 0 && s.answered == 0 && s.unattributed == 0),
        gateway: names(|s| s.unattributed > 0 && s.answered == 0 && s.unconfirmed == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clarification 11's 3 significant digits: a sub-second latency keeps its milliseconds
    /// (recorded in whole seconds, 0.834 s was 1), a whole second stays whole (not the top
    /// of its bucket, 5.001), and a long one is cut to 3 digits, as the histogram holds it.
    #[test]
    fn latency_quantiles_keep_3_significant_digits() {
        let quantiles = |latencies: &[f64], resolution: u64| {
            let mut q = LatencyQuantiles::new(resolution);
            latencies.iter().for_each(|l| q.record(*l));
            (q.quantile(0.5), q.quantile(0.99), q.max())
        };
        assert_eq!(
            quantiles(&[0.834], LatencyQuantiles::RESOLUTION_MS),
            (Some(0.834), Some(0.834), Some(0.834))
        );
        assert_eq!(
            quantiles(&[0.834], 1000),
            (Some(1.0), Some(1.0), Some(0.834))
        );
        assert_eq!(
            quantiles(&[5.0, 5.0, 1320.0], LatencyQuantiles::RESOLUTION_MS),
            (Some(5.0), Some(1320.0), Some(1320.0))
        );
        assert_eq!(
            quantiles(&[12.345, 86_461.0], LatencyQuantiles::RESOLUTION_MS),
            (Some(12.3), Some(86_461.0), Some(86_461.0))
        );
        assert_eq!(
            quantiles(&[], LatencyQuantiles::RESOLUTION_MS),
            (None, None, None)
        );
        // Past the histogram's first buckets (it grows; it used to clamp to 2, as the
        // whole-second figures of older packs still are).
        assert_eq!(quantiles(&[3.0 * 3600.0], 1000).0, Some(2.0));
        assert_eq!(
            quantiles(&[3.0 * 3600.0; 3], LatencyQuantiles::RESOLUTION_MS),
            (Some(10_800.0), Some(10_800.0), Some(10_800.0))
        );
        assert_eq!(significant_3(0.0004567), 0.000457);
        assert_eq!(significant_3(999.6), 1000.0);
    }
}
