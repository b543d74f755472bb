//! The quarterly evidence pack: one Parquet file per table for a quarter, sorted by time, a
//! `README.md` saying what they hold, and `manifest.json` with row counts, SHA-256 of each file, the time range, the schema version,
//! the producer and the quarter's figures. The same store gives byte-identical files, so an
//! auditor can re-run the export and compare hashes; `verify` re-checks a pack.

use super::schema::{self, LeaverRow, OperationRow, PostDisableRow, Table};
use super::writer::{write_file, AuditError};
use crate::config::SloConfig;
use crate::durable;
use crate::judge::ClockStart;
use crate::model::Stage;
use crate::report::{LatencyQuantiles, SloStatus};
use crate::time::{days_from_civil, Ts, MICROS_PER_SEC};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// A calendar quarter, `2026Q3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarter {
    pub year: i64,
    pub quarter: i64,
}

impl Quarter {
    pub fn parse(text: &str) -> Option<Quarter> {
        let (year, quarter) = text
            .trim()
            .to_ascii_uppercase()
            .split_once('Q')
            .map(|(y, q)| (y.to_string(), q.to_string()))?;
        let year: i64 = year.parse().ok()?;
        let quarter: i64 = quarter.parse().ok()?;
        ((1970..=9999).contains(&year) && (1..=4).contains(&quarter))
            .then_some(Quarter { year, quarter })
    }
    /// First instant of the quarter, and of the next one.
    pub fn range(self) -> (Ts, Ts) {
        let start = days_from_civil(self.year, (self.quarter - 1) * 3 + 1, 1);
        let end = if self.quarter == 4 {
            days_from_civil(self.year + 1, 1, 1)
        } else {
            days_from_civil(self.year, self.quarter * 3 + 1, 1)
        };
        (
            Ts(start * 86_400 * MICROS_PER_SEC),
            Ts(end * 86_400 * MICROS_PER_SEC),
        )
    }
}

impl std::fmt::Display for Quarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}Q{}", self.year, self.quarter)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub rows: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    pub operations: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub unconfirmed: u64,
    pub success_rate: Option<f64>,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaverSummary {
    /// Every episode with a row: disabled, or still open when its row was written.
    pub episodes: u64,
    pub disabled: u64,
    /// Still open when their row was written (at the end of a replay, or by the daemon once
    /// past the deadline). Absent from packs made before it was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<u64>,
    pub breaches: u64,
    pub high_risk_breaches: u64,
    /// What the latency quantiles were recorded in: 1 (ms). Absent from packs made before it,
    /// whose quantiles were whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_resolution_ms: Option<u64>,
    pub latency_seconds_p50: Option<f64>,
    pub latency_seconds_p95: Option<f64>,
    pub latency_seconds_max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The thresholds the statuses were judged against.
    pub healthy_ratio: f64,
    pub incident_ratio: f64,
    pub min_operations: u64,
    pub stages: BTreeMap<String, StageSummary>,
    pub unattributed: u64,
    pub skipped: u64,
    pub leavers: LeaverSummary,
    /// Requests made as a user after their account was disabled. Absent from packs made
    /// before the `post_disable_activity` table (schema version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_disable_requests: Option<u64>,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub schema_version: String,
    pub producer: String,
    pub quarter: String,
    pub time_range: TimeRange,
    pub files: BTreeMap<String, FileEntry>,
    /// The pack's `README.md`: what each file and column means, for whoever opens it without
    /// scimwatch's own documentation. Absent from packs of schema version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readme: Option<ReadmeEntry>,
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadmeEntry {
    pub path: String,
    pub sha256: String,
}

/// A pack's `README.md`, the same in every pack of this schema version.
const PACK_README: &str = include_str!("pack-readme.md");
/// Its name in a pack.
const README_FILE: &str = "README.md";

/// The daemon writes an episode's row when it passes its deadline still open (state `open`)
/// and again when it is disabled or cancelled: keeps one row per episode, the one that ended
/// it where there is one. Rows are one episode when app and `initiated_at` are the same and so is the login or
/// the user ID (an episode learns its login from a later operation, so the open row may lack
/// it).
fn one_row_per_episode(rows: Vec<LeaverRow>) -> Vec<LeaverRow> {
    one_row_per_episode_by(rows, |row| row)
}

/// [`one_row_per_episode`] of items that each hold a row.
fn one_row_per_episode_by<T>(mut rows: Vec<T>, row_of: impl Fn(&T) -> &LeaverRow) -> Vec<T> {
    // The disabled or cancelled row (an episode ends one way); else the open row judged last
    // (it knows more: with one deadline an open episode only goes from in time to breached,
    // and one judged again after the high-risk policy changed holds the new decision); then
    // a breached one, then the one that knows most operations.
    let open = |row: &LeaverRow| !matches!(row.state.as_str(), "disabled" | "cancelled");
    let in_time = |row: &LeaverRow| row.met_slo != Some(false);
    rows.sort_by(|a, b| {
        let (a, b) = (row_of(a), row_of(b));
        (&a.app, a.initiated_at, open(a))
            .cmp(&(&b.app, b.initiated_at, open(b)))
            .then(b.as_of.cmp(&a.as_of))
            .then(in_time(a).cmp(&in_time(b)))
            .then(b.correlation_ids.len().cmp(&a.correlation_ids.len()))
    });
    let same_user = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
    let mut kept: Vec<T> = Vec::with_capacity(rows.len());
    let mut group_start = 0;
    for item in rows {
        let row = row_of(&item);
        if kept
            .get(group_start)
            .map(&row_of)
            .is_none_or(|first| (&first.app, first.initiated_at) != (&row.app, row.initiated_at))
        {
            group_start = kept.len();
        }
        let duplicate = kept[group_start..].iter().map(&row_of).any(|k| {
            same_user(&k.user_login, &row.user_login) || same_user(&k.user_id, &row.user_id)
        });
        if !duplicate {
            kept.push(item);
        }
    }
    kept
}

/// Leaves out an `open` row whose operations all belong to another row of the same app and
/// user that holds more of them: an episode merged into that one, when `[apps] aliases`
/// added across a daemon's restart made two spellings one app (its open row stood in packs
/// as a leaver still not disabled: QA helper-64). Two episodes never share an operation
/// otherwise.
fn without_merged_open_rows(rows: Vec<LeaverRow>) -> Vec<LeaverRow> {
    let mut holding: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        if row.correlation_ids.len() > 1 {
            for cid in &row.correlation_ids {
                holding.entry(cid.as_str()).or_default().push(i);
            }
        }
    }
    let same_user = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
    let merged: Vec<bool> = (rows.iter().enumerate())
        .map(|(i, row)| {
            let Some(first) = row.correlation_ids.first() else {
                return false;
            };
            row.state == "open"
                && (holding.get(first.as_str()).into_iter().flatten()).any(|&j| {
                    let other = &rows[j];
                    j != i
                        && other.app == row.app
                        && (same_user(&other.user_login, &row.user_login)
                            || same_user(&other.user_id, &row.user_id))
                        && other.correlation_ids.len() > row.correlation_ids.len()
                        && row
                            .correlation_ids
                            .iter()
                            .all(|c| other.correlation_ids.contains(c))
                })
        })
        .collect();
    (rows.into_iter().zip(merged))
        .filter(|(_, merged)| !merged)
        .map(|(row, _)| row)
        .collect()
}

/// Keeps one `disabled` row of those of an app and user disabled at the same instant: the
/// one begun first, with the others' operations (and the disabling operation, where it has
/// none). An account is disabled once at an instant (a second episode needs a rehire after
/// the first closed), so two such rows come from an episode begun under a name that `[apps]
/// aliases` made the app's since, ended by the disable under the app's own name, which the
/// run before the alias took for an episode of its own (the daemon's restart, or `replay
/// --append`, writes the first's row, disabled at the second's instant): one replay of all
/// the logs with the aliases now holds the one begun first. `earlier`: rows begun before
/// the pack's quarter, disabled in it or after: one of them is the row begun first (review
/// helper-69: the later quarter's pack counted the episode again). Rows of two accounts
/// (two user ids under one login) are two episodes.
fn one_episode_per_disable(mut rows: Vec<LeaverRow>, earlier: &[LeaverRow]) -> Vec<LeaverRow> {
    use crate::model::fold_case;
    let key_of = |row: &LeaverRow| {
        let at = row.disabled_at.filter(|_| row.state == "disabled")?;
        let user = row.user_login.as_deref().or(row.user_id.as_deref())?;
        Some((row.app.clone(), fold_case(user).into_owned(), at))
    };
    let same_account = |a: &LeaverRow, b: &LeaverRow| match (&a.user_id, &b.user_id) {
        (Some(a), Some(b)) => fold_case(a) == fold_case(b),
        _ => true,
    };
    // (app, folded user key, disabled at) → the row begun first of each account: in this
    // pack, or earlier.
    type Firsts<'a> = Vec<Result<usize, &'a LeaverRow>>;
    let mut first: HashMap<(String, String, i64), Firsts<'_>> = HashMap::new();
    for row in earlier {
        if let Some(key) = key_of(row) {
            let firsts = first.entry(key).or_default();
            let known = |f: &Result<usize, &LeaverRow>| matches!(f, Err(r) if same_account(r, row));
            if !firsts.iter().any(known) {
                firsts.push(Err(row));
            }
        }
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].initiated_at);
    let mut dropped = vec![false; rows.len()];
    for i in order {
        let Some(key) = key_of(&rows[i]) else {
            continue;
        };
        let firsts = first.entry(key).or_default();
        let account = firsts.iter().find(|f| match f {
            Ok(kept) => same_account(&rows[*kept], &rows[i]),
            Err(begun_earlier) => same_account(begun_earlier, &rows[i]),
        });
        match account {
            None => firsts.push(Ok(i)),
            Some(Err(_)) => dropped[i] = true,
            Some(&Ok(kept)) => {
                dropped[i] = true;
                let (cids, by) = (rows[i].correlation_ids.clone(), rows[i].disabled_by.clone());
                for cid in cids {
                    if !rows[kept].correlation_ids.contains(&cid) {
                        rows[kept].correlation_ids.push(cid);
                    }
                }
                if rows[kept].disabled_by.is_none() {
                    rows[kept].disabled_by = by;
                }
            }
        }
    }
    (rows.into_iter().zip(dropped))
        .filter(|(_, dropped)| !dropped)
        .map(|(row, _)| row)
        .collect()
}

/// What a replay appended to the store carries on with, read in one pass over each table
/// (`replay --append`).
#[derive(Debug, Default)]
pub struct CarryOver {
    /// The leaver episodes the store holds as still open (no disabled row for them).
    pub open: Vec<LeaverRow>,
    /// The pairs it holds as disabled, with the first rehire its operations show after the
    /// disabling operation: so a second leaver operation opens no new episode and a request
    /// made as the user is post-disable activity, as one replay of all the logs says. A pair
    /// is carried only where the store shows its closure still stood: its latest episode is
    /// the disabled one (a later one, open or cancelled, means it was rehired), and that
    /// episode's clock was not the user disabled at the source (a return there, which the
    /// store does not record, would have undone it) nor unknown (a version 1 row).
    pub closed: Vec<crate::judge::Closed>,
    /// The oldest and newest operation times (an operation's IdP record's, else its first
    /// attempt's: the time a row is filed under): appended logs should not overlap them.
    pub operation_span: Option<(i64, i64)>,
    /// The rows that end open episodes the store holds under two names that `[apps]
    /// aliases` now make one app (written by the replay, as the daemon writes them at a
    /// restart): one the other name's disable of the same account ended, and the younger of
    /// two open ones (cancelled: its operations are the older one's now).
    pub ended: Vec<LeaverRow>,
}

/// Reads what a replay appended to the store under `data` carries on with ([`CarryOver`]):
/// every leaver row once, and eight columns of the operations once, their apps under the
/// names `apps`' aliases give them now.
pub fn carry_over(
    data: &Path,
    apps: &crate::config::AppsConfig,
    policy: &crate::judge::Policy,
) -> Result<CarryOver, AuditError> {
    use crate::model::fold_case;
    let rename = apps.renamer();
    // Each row under its app's name now, with the name it was written under. Where the
    // policy names no groups (a row keeps none), an open one is decided again by it, as the
    // daemon decides its open leavers at a restart (QA helper-70: an alias made an app
    // high-risk, and the carried episode kept the standard deadline).
    let redecide = !policy.uses_groups();
    let mut rows = Vec::new();
    for path in table_files(data, Table::Leavers, ALL_DATES)? {
        for mut row in read_leavers(&path)? {
            let written_as = row.app.clone();
            crate::model::rename_app(&mut row.app, &rename);
            if redecide && row.state == "open" {
                let (high_risk, deadline) = policy.decide(crate::judge::policy::Subject {
                    app: Some(&row.app),
                    user_login: row.user_login.as_deref(),
                    user_id: row.user_id.as_deref(),
                    groups: &[],
                });
                row.high_risk = high_risk;
                row.deadline_seconds = deadline.min(i64::MAX as u64) as i64;
            }
            rows.push((row, written_as));
        }
    }
    let episodes = one_row_per_episode_by(rows, |(row, _)| row);
    let pair_key = |row: &LeaverRow| {
        let user = row.user_login.as_deref().or(row.user_id.as_deref())?;
        Some((row.app.clone(), fold_case(user).into_owned()))
    };
    let (open, ended) = merge_renamed_pairs(&episodes, pair_key);
    // Each pair's latest episode as settled (an ended row in place of its open one), keyed
    // as the engine keys pairs: the login, else the id.
    let settled = (episodes.iter().map(|(row, _)| row))
        .filter(|row| row.state != "open")
        .chain(&open)
        .chain(ended.iter().map(|(row, _)| row));
    let mut latest: BTreeMap<(String, String), LeaverRow> = BTreeMap::new();
    for row in settled {
        let Some(key) = pair_key(row) else {
            continue;
        };
        if latest
            .get(&key)
            .is_none_or(|known| known.initiated_at < row.initiated_at)
        {
            latest.insert(key, row.clone());
        }
    }
    // Written under the names they were: an open row and the row that ends it are one
    // episode to any reader, with these aliases or without.
    let ended = (ended.into_iter())
        .map(|(row, written_as)| LeaverRow {
            app: written_as,
            ..row
        })
        .collect();
    struct Candidate {
        closed: crate::judge::Closed,
        disabled_by: Option<String>,
        /// The disabling operation's time (the engine closes at its 2xx, never before it).
        closed_at: Option<i64>,
        joiners: Vec<i64>,
    }
    let mut candidates: BTreeMap<(String, String), Candidate> = latest
        .into_iter()
        .filter_map(|(key, row)| {
            let disabled_at = row.disabled_at.filter(|_| row.state == "disabled")?;
            let clock = row.clock_start.as_deref()?;
            (clock != ClockStart::UserTrigger.as_str()).then(|| {
                let candidate = Candidate {
                    closed: crate::judge::Closed {
                        app: row.app,
                        user_id: row.user_id,
                        user_login: row.user_login,
                        disabled_at: Ts(disabled_at),
                        rehired_at: None,
                    },
                    disabled_by: row.disabled_by,
                    closed_at: None,
                    joiners: Vec::new(),
                };
                (key, candidate)
            })
        })
        .collect();
    let closing: BTreeMap<(String, String), (String, String)> = candidates
        .iter()
        .filter_map(|(key, c)| Some(((key.0.clone(), c.disabled_by.clone()?), key.clone())))
        .collect();
    let mut operation_span: Option<(i64, i64)> = None;
    for_each_operation(data, |op| {
        operation_span = Some(operation_span.map_or((op.time, op.time), |(from, to)| {
            (from.min(op.time), to.max(op.time))
        }));
        if candidates.is_empty() || op.skipped_or_unattributed {
            return;
        }
        let Some(app) = op.app else {
            return;
        };
        let renamed = rename(app);
        let app = renamed.as_deref().unwrap_or(app);
        if let Some(cid) = op.correlation_id {
            if let Some(key) = closing.get(&(app.to_string(), cid.to_string())) {
                if let Some(candidate) = candidates.get_mut(key) {
                    candidate.closed_at = Some(op.time);
                }
            }
        }
        if !op.joiner {
            return;
        }
        // A joiner reaches a pair by any of its names that is the pair's key.
        for name in [op.user_login, op.user_id].into_iter().flatten() {
            let key = (app.to_string(), fold_case(name).into_owned());
            if let Some(candidate) = candidates.get_mut(&key) {
                candidate.joiners.push(op.time);
                break;
            }
        }
    })?;
    let mut closed: Vec<crate::judge::Closed> = candidates
        .into_values()
        .map(|mut candidate| {
            // The engine takes operations in time order and closes the episode at the
            // disabling one's 2xx (or its own time, if later): a joiner after that is a
            // rehire (one before it, while the episode was open, would have cancelled it).
            let disabled_at = candidate.closed.disabled_at.0;
            let after = candidate
                .closed_at
                .map_or(disabled_at, |t| t.max(disabled_at));
            candidate.closed.rehired_at = candidate
                .joiners
                .iter()
                .copied()
                .filter(|&j| j > after)
                .min()
                .map(Ts);
            candidate.closed
        })
        .collect();
    closed.sort_by_key(|c| c.disabled_at);
    Ok(CarryOver {
        open,
        closed,
        operation_span,
        ended,
    })
}

/// The open episodes of `episodes` (one row each, with the app name it was written under)
/// to carry on with, and the rows that end others (under the names now, with the names
/// written under): where `[apps] aliases` made two names one app since the rows were
/// written, a pair may hold two open episodes, or one and the other name's disable. Settled
/// as the daemon settles its pairs at a restart (`Pair::merge`): an episode is ended by the
/// first disable of the same account under the other name at or after its first operation;
/// of two open ones under the two names the older stays, with the other's operations, and
/// the other is cancelled. One begun after the other name's disables stays open: whether a
/// rehire came between is not known (when in doubt, an episode). Rows under one name are
/// left as they are (QA helper-68: a trigger's time from before a closure, or an episode
/// the memory cap dropped, is not an alias's doing).
fn merge_renamed_pairs(
    episodes: &[(LeaverRow, String)],
    pair_key: impl Fn(&LeaverRow) -> Option<(String, String)>,
) -> (Vec<LeaverRow>, Vec<(LeaverRow, String)>) {
    use crate::audit::writer::{leaver_row, open_episode};
    use crate::model::fold_case;
    let mut ended = Vec::new();
    let mut end = |(row, written_as): &(LeaverRow, String), disabled: Option<&LeaverRow>| {
        let episode = open_episode(row);
        let mut episode =
            crate::judge::leavers::ended_by(episode, disabled.and_then(|d| d.disabled_at).map(Ts));
        episode.disabled_by = disabled.and_then(|d| d.disabled_by.clone());
        ended.push((
            leaver_row(&episode, episode.initiated_at),
            written_as.clone(),
        ));
    };
    // Each pair's disables, in time order, with the name each was written under.
    type Disables<'a> = Vec<(i64, &'a LeaverRow, &'a str)>;
    let mut disables: BTreeMap<(String, String), Disables<'_>> = BTreeMap::new();
    for (row, written_as) in episodes.iter().filter(|(r, _)| r.state == "disabled") {
        if let (Some(key), Some(at)) = (pair_key(row), row.disabled_at) {
            disables.entry(key).or_default().push((at, row, written_as));
        }
    }
    for list in disables.values_mut() {
        list.sort_by_key(|(at, _, _)| *at);
    }
    let mut open: BTreeMap<(String, String), (LeaverRow, String)> = BTreeMap::new();
    let mut others = Vec::new();
    let mut rows: Vec<&(LeaverRow, String)> =
        episodes.iter().filter(|(r, _)| r.state == "open").collect();
    rows.sort_by_key(|(r, _)| r.initiated_at);
    for item in rows {
        let (row, written_as) = item;
        let Some(key) = pair_key(row) else {
            others.push(row.clone());
            continue;
        };
        let start = row.first_attempt_at.unwrap_or(row.initiated_at);
        let same_account = |disabled: &LeaverRow| match (&row.user_id, &disabled.user_id) {
            (Some(id), Some(closed)) => fold_case(id) == fold_case(closed),
            _ => true,
        };
        let closure = (disables.get(&key).into_iter().flatten()).find(|(at, disabled, name)| {
            *at >= start && name != written_as && same_account(disabled)
        });
        if let Some((_, disabled, _)) = closure {
            end(item, Some(disabled));
            continue;
        }
        match open.entry(key) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(item.clone());
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                let (kept, kept_as) = slot.get_mut();
                if kept_as == written_as {
                    // As before aliases: the engine carries on with the older.
                    others.push(row.clone());
                    continue;
                }
                end(item, None);
                for cid in &row.correlation_ids {
                    if !kept.correlation_ids.contains(cid) {
                        kept.correlation_ids.push(cid.clone());
                    }
                }
                kept.first_attempt_at = match (kept.first_attempt_at, row.first_attempt_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                kept.user_id = kept.user_id.take().or(row.user_id.clone());
                kept.user_login = kept.user_login.take().or(row.user_login.clone());
            }
        }
    }
    let mut open: Vec<LeaverRow> = (open.into_values().map(|(row, _)| row))
        .chain(others)
        .collect();
    sort_leavers(&mut open);
    (open, ended)
}

/// The columns of an `operations` row [`for_each_operation`] hands on.
struct OperationFacts<'a> {
    /// The time the row is filed under: its IdP record's, else its first attempt's.
    time: i64,
    correlation_id: Option<&'a str>,
    app: Option<&'a str>,
    user_id: Option<&'a str>,
    user_login: Option<&'a str>,
    joiner: bool,
    skipped_or_unattributed: bool,
}

/// Calls `each` for every `operations` row of the store that has a time, reading eight
/// columns of each file (the types checked, as every reader of the tables checks them).
fn for_each_operation(
    data: &Path,
    mut each: impl FnMut(OperationFacts<'_>),
) -> Result<(), AuditError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;
    use arrow_array::Array;
    use parquet::arrow::ProjectionMask;
    const COLUMNS: [&str; 8] = [
        "correlation_id",
        "stage",
        "app",
        "user_id",
        "user_login",
        "idp_time",
        "first_attempt_time",
        "outcome",
    ];
    for path in table_files(data, Table::Operations, ALL_DATES)? {
        let corrupt = |message: String| AuditError::Corrupt {
            path: path.clone(),
            message,
        };
        let file = File::open(&path).map_err(|e| AuditError::io(&path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| corrupt(format!("not a readable Parquet file: {e}")))?;
        let columns = builder.parquet_schema().columns();
        let mut leaves = Vec::new();
        for name in COLUMNS {
            let leaf = columns
                .iter()
                .position(|c| c.name() == name)
                .ok_or_else(|| corrupt(format!("no column {name}")))?;
            leaves.push(leaf);
        }
        let mask = ProjectionMask::leaves(builder.parquet_schema(), leaves);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| corrupt(format!("not a readable Parquet file: {e}")))?;
        for batch in reader {
            let batch = batch.map_err(|e| corrupt(format!("unreadable data: {e}")))?;
            // A projection keeps the file's column order, whatever the mask's.
            let column = |name: &str| -> Result<&arrow_array::ArrayRef, AuditError> {
                let index = batch
                    .schema()
                    .index_of(name)
                    .map_err(|e| corrupt(e.to_string()))?;
                Ok(batch.column(index))
            };
            let text = |name: &str| {
                column(name)?
                    .as_string_opt::<i32>()
                    .ok_or_else(|| corrupt(format!("column {name} is not text")))
            };
            let time = |name: &str| {
                column(name)?
                    .as_primitive_opt::<TimestampMicrosecondType>()
                    .ok_or_else(|| corrupt(format!("column {name} is not a timestamp (µs)")))
            };
            let (cid, stage, app, outcome) = (
                text("correlation_id")?,
                text("stage")?,
                text("app")?,
                text("outcome")?,
            );
            let (user_id, user_login) = (text("user_id")?, text("user_login")?);
            let (idp_time, first) = (time("idp_time")?, time("first_attempt_time")?);
            fn value(array: &arrow_array::StringArray, row: usize) -> Option<&str> {
                array.is_valid(row).then(|| array.value(row))
            }
            for row in 0..batch.num_rows() {
                let time = if idp_time.is_valid(row) {
                    idp_time.value(row)
                } else if first.is_valid(row) {
                    first.value(row)
                } else {
                    continue;
                };
                each(OperationFacts {
                    time,
                    correlation_id: value(cid, row),
                    app: value(app, row),
                    user_id: value(user_id, row),
                    user_login: value(user_login, row),
                    joiner: stage.value(row) == "joiner",
                    skipped_or_unattributed: matches!(
                        outcome.value(row),
                        "skipped" | "unattributed"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The committed Parquet files the store under `data` holds, over both tables and every date
/// (none where a table's directory is missing).
pub fn stored_files(data: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut files = Vec::new();
    for table in Table::ALL {
        files.extend(table_files(data, table, ALL_DATES)?);
    }
    Ok(files)
}

/// Every `date=` partition.
const ALL_DATES: (&str, &str) = ("", "\u{10ffff}");

/// Lists a table's committed files for dates in `[from, to)` (temporaries are skipped); none
/// where the table's directory is missing (a store with no leaver yet).
fn table_files(
    data: &Path,
    table: Table,
    (from, to): (&str, &str),
) -> Result<Vec<PathBuf>, AuditError> {
    let dir = data.join(table.name());
    let mut files = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(AuditError::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(date) = name.strip_prefix("date=") else {
            continue;
        };
        if date < from || date >= to {
            continue;
        }
        let partition = entry.path();
        for file in fs::read_dir(&partition).map_err(|e| AuditError::io(&partition, e))? {
            let file = file.map_err(|e| AuditError::io(&partition, e))?;
            let file_name = file.file_name().to_string_lossy().into_owned();
            if file_name.ends_with(".parquet") && !file_name.starts_with('.') {
                files.push(file.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

fn read_batches(path: &Path) -> Result<Vec<arrow_array::RecordBatch>, AuditError> {
    let corrupt = |message: String| AuditError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| corrupt(format!("not a readable Parquet file: {e}")))?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.map_err(|e| corrupt(format!("unreadable data: {e}")))?);
    }
    Ok(batches)
}

/// Reads every row of a file with `rows_of`, one of [`schema`]'s readers.
fn read_rows<T>(
    path: &Path,
    rows_of: fn(&arrow_array::RecordBatch) -> Result<Vec<T>, schema::SchemaMismatch>,
) -> Result<Vec<T>, AuditError> {
    let mut rows = Vec::new();
    for batch in read_batches(path)? {
        rows.extend(rows_of(&batch).map_err(|e| AuditError::Corrupt {
            path: path.to_path_buf(),
            message: e.0,
        })?);
    }
    Ok(rows)
}

/// Reads every `operations` row of a file.
pub fn read_operations(path: &Path) -> Result<Vec<OperationRow>, AuditError> {
    read_rows(path, schema::operations_rows)
}

/// Reads every `leavers` row of a file.
pub fn read_leavers(path: &Path) -> Result<Vec<LeaverRow>, AuditError> {
    read_rows(path, schema::leavers_rows)
}

/// Reads every `post_disable_activity` row of a file.
pub fn read_post_disable(path: &Path) -> Result<Vec<PostDisableRow>, AuditError> {
    read_rows(path, schema::post_disable_rows)
}

fn sha256_of(path: &Path) -> Result<String, AuditError> {
    let mut file = File::open(path).map_err(|e| AuditError::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| AuditError::io(path, e))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The quarter's figures from its rows; leaver latencies at `resolution_ms` (see
/// [`LatencyQuantiles`]).
fn summarize(
    operations: &[OperationRow],
    leavers: &[LeaverRow],
    post_disable: Option<&[PostDisableRow]>,
    slo: &SloConfig,
    resolution_ms: u64,
) -> Summary {
    let mut stages = BTreeMap::new();
    for stage in Stage::ALL {
        let of_stage = operations.iter().filter(|r| r.stage == stage.as_str());
        let (mut succeeded, mut failed, mut unconfirmed) = (0, 0, 0);
        for row in of_stage {
            match row.outcome.as_str() {
                "succeeded" => succeeded += 1,
                "failed" => failed += 1,
                "unconfirmed" => unconfirmed += 1,
                _ => {}
            }
        }
        let total = succeeded + failed + unconfirmed;
        stages.insert(
            stage.as_str().to_string(),
            StageSummary {
                operations: total,
                succeeded,
                failed,
                unconfirmed,
                success_rate: (total > 0).then(|| succeeded as f64 / total as f64),
                status: SloStatus::judge(succeeded, total, slo).as_str().to_string(),
            },
        );
    }
    let mut latency = LatencyQuantiles::new(resolution_ms);
    for seconds in leavers.iter().filter_map(|r| r.latency_seconds) {
        latency.record(seconds);
    }
    Summary {
        healthy_ratio: slo.healthy_ratio,
        incident_ratio: slo.incident_ratio,
        min_operations: slo.min_operations,
        stages,
        unattributed: operations
            .iter()
            .filter(|r| r.outcome == "unattributed")
            .count() as u64,
        skipped: operations.iter().filter(|r| r.outcome == "skipped").count() as u64,
        leavers: LeaverSummary {
            episodes: leavers.len() as u64,
            disabled: leavers.iter().filter(|r| r.state == "disabled").count() as u64,
            open: Some(leavers.iter().filter(|r| r.state == "open").count() as u64),
            breaches: leavers.iter().filter(|r| r.met_slo == Some(false)).count() as u64,
            high_risk_breaches: leavers
                .iter()
                .filter(|r| r.met_slo == Some(false) && r.high_risk)
                .count() as u64,
            latency_resolution_ms: Some(resolution_ms),
            latency_seconds_p50: latency.quantile(0.5),
            latency_seconds_p95: latency.quantile(0.95),
            latency_seconds_max: latency.max(),
        },
        post_disable_requests: post_disable.map(|rows| rows.len() as u64),
    }
}

/// The manifest's `format`.
const PACK_FORMAT: &str = "scimwatch-evidence-pack";

/// A table's file in a pack: `operations.parquet`, `leavers.parquet`,
/// `post_disable_activity.parquet` (beside them, `manifest.json`).
fn pack_file(table: Table) -> String {
    format!("{}.parquet", table.name())
}

/// The first and last time among a pack's rows (operations by their time, leavers by when
/// the episode started, post-disable requests by theirs).
fn time_range(
    operations: &[OperationRow],
    leavers: &[LeaverRow],
    post_disable: &[PostDisableRow],
) -> TimeRange {
    let times = || {
        operations
            .iter()
            .map(OperationRow::time)
            .chain(leavers.iter().map(|r| r.initiated_at))
            .chain(post_disable.iter().map(|r| r.time))
    };
    TimeRange {
        from: times().min().map(|t| Ts(t).to_string()),
        to: times().max().map(|t| Ts(t).to_string()),
    }
}

/// Leavers by when their episode started, then by everything else: a total order, so the same
/// rows always give the same bytes.
fn sort_leavers(leavers: &mut [LeaverRow]) {
    leavers.sort_by(|a, b| {
        a.initiated_at
            .cmp(&b.initiated_at)
            .then(a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal))
    });
}

/// Builds the evidence pack of `quarter` from the store at `data` into the new directory `out`.
/// The pack is assembled beside `out` and renamed into place, so it appears whole or not at all.
pub fn export(
    data: &Path,
    quarter: Quarter,
    out: &Path,
    slo: &SloConfig,
    apps: &crate::config::AppsConfig,
    open: &[LeaverRow],
) -> Result<Manifest, AuditError> {
    if !Table::ALL
        .iter()
        .any(|table| data.join(table.name()).is_dir())
    {
        return Err(AuditError::Corrupt {
            path: data.to_path_buf(),
            message: "is not a scimwatch data directory (it has no operations/ or leavers/)".into(),
        });
    }
    if out.exists()
        && fs::read_dir(out)
            .map_err(|e| AuditError::io(out, e))?
            .next()
            .is_some()
    {
        return Err(AuditError::PackExists {
            path: out.to_path_buf(),
        });
    }
    let (start, end) = quarter.range();
    let (from, to) = (start.date(), end.date());
    let mut operations = Vec::new();
    for path in table_files(data, Table::Operations, (&from, &to))? {
        operations.extend(
            read_operations(&path)?
                .into_iter()
                .filter(|r| (start.0..end.0).contains(&r.time())),
        );
    }
    // The episodes open at the daemon's last checkpoint (read before the store: a disable
    // committed since is in the store, and its row is the one kept).
    let mut leavers: Vec<LeaverRow> = (open.iter())
        .filter(|r| (start.0..end.0).contains(&r.initiated_at))
        .cloned()
        .collect();
    for path in table_files(data, Table::Leavers, (&from, &to))? {
        leavers.extend(
            read_leavers(&path)?
                .into_iter()
                .filter(|r| (start.0..end.0).contains(&r.initiated_at)),
        );
    }
    // Episodes begun before the quarter and disabled in it or after ([`one_episode_per_disable`]).
    let mut earlier = Vec::new();
    for path in table_files(data, Table::Leavers, (ALL_DATES.0, &from))? {
        earlier.extend(read_leavers(&path)?.into_iter().filter(|r| {
            r.initiated_at < start.0
                && r.state == "disabled"
                && r.disabled_at.is_some_and(|at| at >= start.0)
        }));
    }
    // Under the names the config's aliases give now: an episode written open under one
    // spelling and disabled under another after an alias was added is one episode.
    let rename = apps.renamer();
    for row in leavers.iter_mut().chain(&mut earlier) {
        crate::model::rename_app(&mut row.app, &rename);
    }
    let mut leavers = one_episode_per_disable(
        without_merged_open_rows(one_row_per_episode(leavers)),
        &earlier,
    );
    // A cancelled episode (a rehire while open) is neither closed nor breached: not in a pack,
    // and its row took the place of any `open` one written before.
    leavers.retain(|row| row.state != "cancelled");
    let mut post_disable = Vec::new();
    for path in table_files(data, Table::PostDisableActivity, (&from, &to))? {
        post_disable.extend(
            read_post_disable(&path)?
                .into_iter()
                .filter(|r| (start.0..end.0).contains(&r.time)),
        );
    }
    // A total order, so the same rows always give the same bytes.
    operations.sort_by(|a, b| (a.time(), a).cmp(&(b.time(), b)));
    sort_leavers(&mut leavers);
    post_disable.sort();

    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    durable::create_dir_all(parent).map_err(|e| AuditError::io(parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pack".into());
    let staging = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let _ = fs::remove_dir_all(&staging);
        durable::create_dir_all(&staging).map_err(|e| AuditError::io(&staging, e))?;
        let mut files = BTreeMap::new();
        for table in Table::ALL {
            let name = pack_file(table);
            let path = staging.join(&name);
            let (batch, rows) = match table {
                Table::Operations => (schema::operations_columns(&operations), operations.len()),
                Table::Leavers => (schema::leavers_columns(&leavers), leavers.len()),
                Table::PostDisableActivity => (
                    schema::post_disable_columns(&post_disable),
                    post_disable.len(),
                ),
            };
            let batch = batch.map_err(|e| AuditError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
            write_file(&path, table, &batch)?;
            files.insert(
                table.name().to_string(),
                FileEntry {
                    path: name,
                    rows: rows as u64,
                    sha256: sha256_of(&path)?,
                },
            );
        }
        let readme_path = staging.join(README_FILE);
        durable::write_atomic(&readme_path, PACK_README.as_bytes())
            .map_err(|e| AuditError::io(&readme_path, e))?;
        let manifest = Manifest {
            format: PACK_FORMAT.into(),
            schema_version: schema::SCHEMA_VERSION.into(),
            producer: schema::producer(),
            quarter: quarter.to_string(),
            time_range: time_range(&operations, &leavers, &post_disable),
            files,
            readme: Some(ReadmeEntry {
                path: README_FILE.into(),
                sha256: sha256_of(&readme_path)?,
            }),
            summary: summarize(
                &operations,
                &leavers,
                Some(&post_disable),
                slo,
                LatencyQuantiles::RESOLUTION_MS,
            ),
        };
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes") + "\n";
        let manifest_path = staging.join("manifest.json");
        durable::write_atomic(&manifest_path, text.as_bytes())
            .map_err(|e| AuditError::io(&manifest_path, e))?;
        durable::sync_dir(&staging).map_err(|e| AuditError::io(&staging, e))?;
        if out.exists() {
            fs::remove_dir(out).map_err(|e| AuditError::io(out, e))?;
        }
        durable::commit(&staging, out).map_err(|e| AuditError::io(out, e))?;
        Ok(manifest)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// The SHA-256 of a pack's `manifest.json`: kept apart from the pack (a ticket, the audit
/// request), it pins the manifest, and through the manifest every file.
pub fn manifest_sha256(pack: &Path) -> Result<String, AuditError> {
    sha256_of(&pack.join("manifest.json"))
}

/// Re-checks a pack against its manifest. Returns what differs (empty when all is well).
///
/// Each file is re-hashed and re-read, and everything the manifest says of the rows is worked
/// out again from them: row counts, that every row lies in the quarter, the time range, and
/// the figures (judged with the thresholds the manifest records). A pack holds a file per
/// table, its README and its manifest, and nothing else. What this cannot catch is a manifest rewritten whole to match
/// altered files: for that, keep the manifest's SHA-256 (`export` prints it) apart from the
/// pack, or sign the pack.
pub fn verify(pack: &Path) -> Result<Vec<String>, AuditError> {
    let manifest_path = pack.join("manifest.json");
    let text = fs::read_to_string(&manifest_path).map_err(|e| AuditError::io(&manifest_path, e))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| AuditError::Corrupt {
        path: manifest_path.clone(),
        message: format!("not a scimwatch manifest: {e}"),
    })?;
    let mut problems = Vec::new();
    if manifest.format != PACK_FORMAT {
        problems.push(format!(
            "manifest format is {:?}, not {PACK_FORMAT:?}",
            manifest.format
        ));
    }
    for entry in fs::read_dir(pack).map_err(|e| AuditError::io(pack, e))? {
        let name = entry
            .map_err(|e| AuditError::io(pack, e))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let known = name == "manifest.json"
            || (name == README_FILE && manifest.readme.is_some())
            || Table::ALL.iter().any(|t| pack_file(*t) == name);
        if !known {
            problems.push(format!("{name}: not part of a pack"));
        }
    }
    // A pack of schema version 1 predates the post_disable_activity table and README.md.
    let version_1 = manifest.schema_version == "1";
    // A pack without a README (of version 1, or made before packs had one) is not a mismatch:
    // dropping it from a manifest changes the manifest's SHA-256, kept apart.
    match &manifest.readme {
        None => {}
        Some(readme) if readme.path != README_FILE => problems.push(format!(
            "manifest names {:?} for the readme; a pack's is {README_FILE}",
            readme.path
        )),
        Some(readme) => match pack.join(README_FILE) {
            path if !path.is_file() => problems.push(format!("{README_FILE}: missing")),
            path => {
                let hash = sha256_of(&path)?;
                if hash != readme.sha256 {
                    problems.push(format!(
                        "{README_FILE}: SHA-256 is {hash}, manifest says {}",
                        readme.sha256
                    ));
                }
            }
        },
    }
    let mut operations = None;
    let mut leavers = None;
    let mut post_disable = None;
    for table in Table::ALL {
        let name = pack_file(table);
        let Some(entry) = manifest.files.get(table.name()) else {
            if !(version_1 && table == Table::PostDisableActivity) {
                problems.push(format!("manifest lists no {} file", table.name()));
            }
            continue;
        };
        if entry.path != name {
            problems.push(format!(
                "manifest names {:?} for {}; a pack's file is {name}",
                entry.path,
                table.name()
            ));
            continue;
        }
        let path = pack.join(&name);
        if !path.is_file() {
            problems.push(format!("{name}: missing"));
            continue;
        }
        let hash = sha256_of(&path)?;
        if hash != entry.sha256 {
            problems.push(format!(
                "{name}: SHA-256 is {hash}, manifest says {}",
                entry.sha256
            ));
        }
        let rows = match table {
            Table::Operations => read_operations(&path).map(|r| operations.insert(r).len() as u64),
            Table::Leavers => read_leavers(&path).map(|r| leavers.insert(r).len() as u64),
            Table::PostDisableActivity => {
                read_post_disable(&path).map(|r| post_disable.insert(r).len() as u64)
            }
        };
        match rows {
            Ok(rows) if rows != entry.rows => {
                problems.push(format!("{name}: {rows} rows, manifest says {}", entry.rows))
            }
            Ok(_) => {}
            Err(error) => problems.push(format!("{name}: {error}")),
        }
    }
    let (Some(operations), Some(leavers)) = (operations, leavers) else {
        return Ok(problems);
    };
    match Quarter::parse(&manifest.quarter) {
        None => problems.push(format!(
            "manifest quarter {:?} is not a quarter",
            manifest.quarter
        )),
        Some(quarter) => {
            let (start, end) = quarter.range();
            let inside = |t: i64| (start.0..end.0).contains(&t);
            let outside = operations.iter().filter(|r| !inside(r.time())).count();
            if outside > 0 {
                problems.push(format!(
                    "operations.parquet: {outside} rows outside {quarter}"
                ));
            }
            let outside = leavers.iter().filter(|r| !inside(r.initiated_at)).count();
            if outside > 0 {
                problems.push(format!(
                    "leavers.parquet: {outside} episodes started outside {quarter}"
                ));
            }
            let outside = post_disable
                .iter()
                .flatten()
                .filter(|r| !inside(r.time))
                .count();
            if outside > 0 {
                problems.push(format!(
                    "post_disable_activity.parquet: {outside} requests outside {quarter}"
                ));
            }
        }
    }
    problems.extend(contradictions(&leavers));
    let span = time_range(
        &operations,
        &leavers,
        post_disable.as_deref().unwrap_or_default(),
    );
    let early = post_disable
        .iter()
        .flatten()
        .filter(|r| r.time < r.disabled_at)
        .count();
    if early > 0 {
        problems.push(format!(
            "post_disable_activity.parquet: {early} requests made before the disable they \
             are said to follow"
        ));
    }
    if span != manifest.time_range {
        problems.push(format!(
            "time_range: the rows span {span:?}, manifest says {:?}",
            manifest.time_range
        ));
    }
    let said = &manifest.summary;
    let slo = SloConfig {
        healthy_ratio: said.healthy_ratio,
        incident_ratio: said.incident_ratio,
        min_operations: said.min_operations,
        ..SloConfig::default()
    };
    // A pack from before the resolution was recorded: whole seconds.
    let resolution = said.leavers.latency_resolution_ms.unwrap_or(1000);
    let mut worked_out = summarize(
        &operations,
        &leavers,
        post_disable.as_deref(),
        &slo,
        resolution,
    );
    if said.leavers.open.is_none() {
        worked_out.leavers.open = None; // a pack from before the count
    }
    if said.leavers.latency_resolution_ms.is_none() {
        worked_out.leavers.latency_resolution_ms = None;
    }
    let worked_out = serde_json::to_value(worked_out).expect("a summary serializes");
    let said = serde_json::to_value(said).expect("a summary serializes");
    differences("summary", &worked_out, &said, &mut problems);
    Ok(problems)
}

/// The `leavers` rows that contradict themselves: a latency that is not `disabled_at −
/// initiated_at`, a state that does not fit `disabled_at`, or a `met_slo` that is not what the
/// latency, the deadline and (for an open episode) `as_of` say. A row edited to hide a breach
/// and its manifest figures changed to match are caught here. One line per row, and at most
/// [`CONTRADICTIONS_SHOWN`] of them, then a count.
fn contradictions(leavers: &[LeaverRow]) -> Vec<String> {
    let mut found = Vec::new();
    for (index, row) in leavers.iter().enumerate() {
        let latency = row
            .disabled_at
            .map(|d| Ts(d).secs_since(Ts(row.initiated_at)).max(0.0));
        let deadline = row.deadline_seconds as f64;
        let wrong = match row.state.as_str() {
            _ if row.latency_seconds != latency => Some(format!(
                "latency_seconds {:?}, but disabled_at − initiated_at is {latency:?}",
                row.latency_seconds
            )),
            "disabled" => match latency {
                None => Some("state disabled without disabled_at".to_string()),
                Some(l) if row.met_slo != Some(l <= deadline) => Some(format!(
                    "met_slo {}, but {l} s against a deadline of {deadline} s",
                    shown(row.met_slo)
                )),
                Some(_) => None,
            },
            "open" => match (latency, row.as_of) {
                (Some(_), _) => Some("state open with a disabled_at".to_string()),
                (None, Some(as_of)) => {
                    let breached = Ts(as_of).secs_since(Ts(row.initiated_at)) > deadline;
                    (row.met_slo != breached.then_some(false)).then(|| {
                        format!(
                            "met_slo {}, but open {} s at as_of against a deadline of \
                             {deadline} s",
                            shown(row.met_slo),
                            Ts(as_of).secs_since(Ts(row.initiated_at))
                        )
                    })
                }
                // A row from before as_of was kept (schema version 1): not judged here. One
                // that knows what started its clock is of version 2, which always writes it.
                (None, None) => row
                    .clock_start
                    .is_some()
                    .then(|| "state open without as_of".to_string()),
            },
            other => Some(format!(
                "state {other:?} (a pack holds disabled and open episodes)"
            )),
        };
        if let Some(wrong) = wrong {
            found.push(format!(
                "leavers.parquet: row {} ({} {}): {wrong}",
                index + 1,
                row.app,
                row.user_login
                    .as_deref()
                    .or(row.user_id.as_deref())
                    .unwrap_or("?")
            ));
        }
    }
    if found.len() > CONTRADICTIONS_SHOWN {
        let more = found.len() - CONTRADICTIONS_SHOWN;
        found.truncate(CONTRADICTIONS_SHOWN);
        found.push(format!(
            "leavers.parquet: {more} more rows contradict themselves"
        ));
    }
    found
}

/// A nullable flag as a reader shows it.
fn shown(flag: Option<bool>) -> &'static str {
    match flag {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    }
}

/// How many self-contradicting rows `verify` names before it counts the rest.
const CONTRADICTIONS_SHOWN: usize = 20;

/// Where `said` differs from what the rows give (`worked_out`), one line per field.
fn differences(
    at: &str,
    worked_out: &serde_json::Value,
    said: &serde_json::Value,
    problems: &mut Vec<String>,
) {
    use serde_json::Value;
    match (worked_out, said) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let (x, y) = (&a.get(key), &b.get(key));
                match (x, y) {
                    (Some(x), Some(y)) => differences(&format!("{at}.{key}"), x, y, problems),
                    _ => problems.push(format!(
                        "{at}.{key}: the rows give {}, manifest says {}",
                        x.map_or("nothing".into(), Value::to_string),
                        y.map_or("nothing".into(), Value::to_string)
                    )),
                }
            }
        }
        // A ratio read back from JSON may differ in its last bit (serde_json parses floats
        // fast, not exactly): equal to 12 significant digits is the same figure.
        (Value::Number(a), Value::Number(b))
            if a.as_f64()
                .zip(b.as_f64())
                .is_some_and(|(x, y)| (x - y).abs() <= 1e-12 * x.abs().max(y.abs())) => {}
        (a, b) if a != b => problems.push(format!("{at}: the rows give {a}, manifest says {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(app: &str, login: Option<&str>, id: Option<&str>, at: i64, state: &str) -> LeaverRow {
        LeaverRow {
            app: app.into(),
            user_id: id.map(str::to_string),
            user_login: login.map(str::to_string),
            initiated_at: at,
            first_attempt_at: None,
            disabled_at: (state == "disabled").then_some(at + 10),
            latency_seconds: None,
            high_risk: true,
            deadline_seconds: 900,
            met_slo: Some(false),
            correlation_ids: vec![],
            state: state.into(),
            clock_start: Some("operation".into()),
            initiated_by: Some("deactivate".into()),
            disabled_by: None,
            as_of: Some(at + 1_000_000_000),
        }
    }

    /// A pack's quantiles are worked out in the resolution its manifest names: packs from
    /// before `latency_resolution_ms` recorded whole seconds, and verify must not call them a
    /// mismatch.
    #[test]
    fn latency_quantiles_are_worked_out_in_the_manifest_s_resolution() {
        let mut rows = vec![
            row("vault", Some("a@x"), Some("u-1"), 5, "disabled"),
            row("vault", Some("b@x"), Some("u-2"), 6, "disabled"),
        ];
        rows[0].latency_seconds = Some(0.834);
        rows[1].latency_seconds = Some(2.4);
        let figures = |resolution| {
            let l = summarize(&[], &rows, None, &SloConfig::default(), resolution).leavers;
            (
                l.latency_resolution_ms,
                l.latency_seconds_p50,
                l.latency_seconds_p95,
            )
        };
        assert_eq!(figures(1), (Some(1), Some(0.834), Some(2.4)));
        assert_eq!(figures(1000), (Some(1000), Some(1.0), Some(2.0)));
    }

    /// An open row whose operations all belong to a row of the same app and user holding
    /// more is that episode's (two merged by an alias added across a restart: QA helper-64);
    /// one with an operation of its own stays.
    #[test]
    fn an_open_row_merged_into_another_episode_is_left_out() {
        let with = |at: i64, state: &str, cids: &[&str]| LeaverRow {
            correlation_ids: cids.iter().map(|c| c.to_string()).collect(),
            ..row("aws-prod", Some("bob@x"), None, at, state)
        };
        let rows = vec![
            with(1, "open", &["c0"]),
            with(0, "disabled", &["c9", "c0", "c2"]),
            with(5, "open", &["c5"]),
            LeaverRow {
                app: "wiki".into(),
                ..with(1, "open", &["c2"])
            },
        ];
        let kept: Vec<(String, i64)> = (without_merged_open_rows(rows).iter())
            .map(|r| (r.app.clone(), r.initiated_at))
            .collect();
        assert_eq!(
            kept,
            [
                ("aws-prod".to_string(), 0),
                ("aws-prod".to_string(), 5),
                ("wiki".to_string(), 1)
            ]
        );
    }

    /// Of `disabled` rows of one app and user disabled at one instant, the one begun first
    /// is kept, with the others' operations and disabling operation; one begun before the
    /// pack's quarter keeps the pack's out (review helper-69); two accounts under one login
    /// are two episodes, each kept once (review helper-71).
    #[test]
    fn one_disable_is_one_episode() {
        let disabled = |begun: i64, id: Option<&str>, by: Option<&str>, cids: &[&str]| LeaverRow {
            disabled_at: Some(100),
            disabled_by: by.map(str::to_string),
            correlation_ids: cids.iter().map(|c| c.to_string()).collect(),
            ..row("aws-prod", Some("bob@x"), id, begun, "disabled")
        };
        let kept = one_episode_per_disable(
            vec![
                disabled(50, Some("u-1"), Some("b"), &["b"]),
                disabled(10, Some("u-1"), None, &["a"]),
                disabled(60, Some("u-2"), Some("c"), &["c"]),
                disabled(70, Some("u-2"), None, &["d"]),
            ],
            &[],
        );
        let seen: Vec<(i64, Option<String>, Vec<String>)> = (kept.iter())
            .map(|r| {
                (
                    r.initiated_at,
                    r.disabled_by.clone(),
                    r.correlation_ids.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (10, Some("b".into()), vec!["a".into(), "b".into()]),
                (60, Some("c".into()), vec!["c".into(), "d".into()]),
            ]
        );
        let earlier = [disabled(-5, None, None, &["z"])];
        let kept = one_episode_per_disable(vec![disabled(50, None, Some("b"), &["b"])], &earlier);
        assert_eq!(kept, []);
    }

    /// Of an episode's open rows the one judged last is kept: a breach written past the
    /// deadline over the checkpoint's row judged at the deadline, and a row judged in time
    /// by a longer deadline (the policy changed) over the breach written before it.
    #[test]
    fn of_an_episode_s_open_rows_the_one_judged_last_is_kept() {
        let open = |as_of: i64, deadline: i64, met_slo: Option<bool>| LeaverRow {
            as_of: Some(as_of),
            deadline_seconds: deadline,
            met_slo,
            ..row("vault", Some("ann@x"), Some("u-1"), 0, "open")
        };
        let kept = |rows: Vec<LeaverRow>| {
            let kept = one_row_per_episode(rows);
            assert_eq!(kept.len(), 1);
            (kept[0].as_of, kept[0].met_slo)
        };
        let at_deadline = open(900_000_000, 900, None);
        let breach = open(901_000_000, 900, Some(false));
        assert_eq!(
            kept(vec![at_deadline.clone(), breach.clone()]),
            (Some(901_000_000), Some(false))
        );
        let in_time_now = open(1_800_000_000, 3_600, None);
        assert_eq!(kept(vec![breach, in_time_now]), (Some(1_800_000_000), None));
    }

    /// An episode's `open` row (written as it passed its deadline) gives way to its
    /// `disabled` row, also when only the later one knows the login; two users' episodes
    /// that started at the same instant in the same app stay two.
    #[test]
    fn an_episode_breached_then_disabled_is_one_row() {
        let rows = vec![
            row("vault", None, Some("u-1"), 5, "open"),
            row("vault", Some("root@x"), Some("u-1"), 5, "disabled"),
            row("vault", Some("ops@x"), Some("u-2"), 5, "open"),
            row("vault", Some("ops@x"), Some("u-2"), 5, "open"),
            row("wiki", Some("root@x"), Some("u-1"), 5, "open"),
        ];
        let kept = one_row_per_episode(rows);
        let states: Vec<_> = kept
            .iter()
            .map(|r| (r.app.as_str(), r.user_id.as_deref(), r.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("vault", Some("u-1"), "disabled"),
                ("vault", Some("u-2"), "open"),
                ("wiki", Some("u-1"), "open"),
            ]
        );
    }

    #[test]
    fn quarters_parse_and_span_their_months() {
        let q = Quarter::parse("2026q3").unwrap();
        let (start, end) = q.range();
        assert_eq!(start.to_string(), "2026-07-01T00:00:00Z");
        assert_eq!(end.to_string(), "2026-10-01T00:00:00Z");
        assert_eq!(
            Quarter::parse("2026Q4").unwrap().range().1.to_string(),
            "2027-01-01T00:00:00Z"
        );
        for bad in ["2026Q5", "2026", "Q3", "26Q3x"] {
            assert_eq!(Quarter::parse(bad), None, "{bad}");
        }
    }
}
