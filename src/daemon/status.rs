//! What the daemon shows about itself: the live status `demo` prints and the HTTP API serves.

use crate::tail::TailCounters;
use crate::time::Ts;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize)]
pub struct StageCounts {
    pub succeeded: u64,
    pub failed: u64,
    pub unconfirmed: u64,
}

/// An open high-risk (or standard) leaver past its deadline.
#[derive(Debug, Clone, Serialize)]
pub struct OverdueLeaver {
    pub app: String,
    pub user: String,
    pub high_risk: bool,
    pub initiated_at: Ts,
    pub due_at: Ts,
    pub correlation_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TailStatus {
    pub files_opened: u64,
    pub truncations: u64,
    pub copies_detected: u64,
    pub new_generations: u64,
    pub files_closed: u64,
    /// Files being read when the daemon last stopped, gone at its start.
    pub files_lost: u64,
}

impl From<TailCounters> for TailStatus {
    fn from(c: TailCounters) -> Self {
        TailStatus {
            files_opened: c.files_opened,
            truncations: c.truncations,
            copies_detected: c.copies_detected,
            new_generations: c.new_generations,
            files_closed: c.files_closed,
            files_lost: c.files_lost,
        }
    }
}

/// An open leaver episode, as `/api/v1/leavers/open` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLeaver {
    pub app: String,
    pub user: String,
    pub high_risk: bool,
    pub initiated_at: Ts,
    pub age_seconds: f64,
    pub deadline_seconds: u64,
    pub due_at: Ts,
    pub overdue: bool,
    pub correlation_ids: Vec<String>,
}

/// The daemon's state, refreshed every loop.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveStatus {
    /// Checkpoint loaded and every source polled once.
    pub ready: bool,
    /// The live clock: `min(wall clock, watermark + allowed lateness)`.
    pub clock: Option<Ts>,
    /// Where the SLO windows and the alerts' evidence end: every operation before it has been
    /// judged (the clock less the allowed lateness and a join window, or the earliest pending).
    pub judged_until: Option<Ts>,
    pub watermark: Option<Ts>,
    /// Every file read to its end.
    pub caught_up: bool,
    pub lines: BTreeMap<String, u64>,
    pub parse_errors: BTreeMap<String, u64>,
    pub stages: BTreeMap<&'static str, StageCounts>,
    pub causes: BTreeMap<&'static str, u64>,
    pub skipped: u64,
    pub unattributed: u64,
    pub disagreements: u64,
    pub post_disable_requests: u64,
    pub leavers_open: usize,
    /// The oldest open episodes (at most 1,000), shared: publishing the status copies a pointer.
    /// Served by `/api/v1/leavers/open`, not with the counters (`/api/v1/status`).
    #[serde(skip)]
    pub open_leavers: std::sync::Arc<Vec<OpenLeaver>>,
    /// Per stage, every window's exact counts, ratio, status and burn rate (`/api/v1/slo`).
    #[serde(skip)]
    pub slo: BTreeMap<&'static str, Vec<crate::slo::WindowReport>>,
    /// What holds now, shared like `open_leavers` (`/api/v1/alerts`).
    #[serde(skip)]
    pub alerts: std::sync::Arc<Vec<std::sync::Arc<crate::alert::Condition>>>,
    /// The oldest overdue episodes (at most 1,000), shared like `open_leavers`.
    #[serde(skip)]
    pub leavers_overdue: std::sync::Arc<Vec<OverdueLeaver>>,
    pub leavers_disabled: u64,
    pub join_pending: usize,
    pub evicted_joins: u64,
    pub evicted_episodes: u64,
    /// Learned (app, resource id) ↔ userName pairs: known now, and forgotten to the cap.
    pub known_names: usize,
    pub forgotten_names: u64,
    pub parquet_rows: BTreeMap<&'static str, u64>,
    pub checkpoints: u64,
    pub last_checkpoint: Option<Ts>,
    pub tail: TailStatus,
}
