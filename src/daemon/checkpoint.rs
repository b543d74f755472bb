//! The daemon's checkpoint: where every file was left, the engine's pending state at exactly
//! that point, and the Parquet files written for it but perhaps not yet renamed into place.
//!
//! Written atomically (durable::write_atomic) *after* the Parquet files are written under
//! temporary names and *before* they are renamed. On start the listed files are renamed if a
//! crash came in between, every other temporary is removed, the engine is restored and reading
//! resumes at the offsets: each operation reaches the tables exactly once.

use crate::audit::writer::PreparedFile;
use crate::durable;
use crate::engine::{EngineState, EngineStateRef};
use crate::tail::FilePosition;
use crate::time::Ts;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Bumped whenever the checkpoint's shape changes; an unknown version is refused, not guessed.
pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub written_at: Ts,
    pub files: Vec<FilePosition>,
    pub engine: EngineState,
    pub pending_files: Vec<PreparedFile>,
    /// The live SLO windows at exactly that point (the lines after it are read again).
    #[serde(default)]
    pub windows: crate::slo::Windows,
    /// The recent failures pages quote.
    #[serde(default)]
    pub evidence: crate::alert::Evidence,
    /// Each source's newest event time, so a source silent across a restart is still stale.
    #[serde(default)]
    pub last_events: std::collections::BTreeMap<String, Ts>,
    /// Open episodes past their deadline whose `open` row is in the tables: (app, user,
    /// initiated_at).
    #[serde(default)]
    pub breach_rows: std::collections::BTreeSet<(String, String, Ts)>,
    /// The config's source names in order: the engine's pending state names sources by their
    /// place in this list (empty in checkpoints from before it was kept).
    #[serde(default)]
    pub sources: Vec<String>,
    /// How many Parquet files the daemon had committed to the store once this checkpoint's
    /// own were (absent from checkpoints from before it was kept): a store holding more was
    /// written past this checkpoint, which is then an old one put back.
    #[serde(default)]
    pub store_files: Option<u64>,
    /// The newest of those files, as [`file_order`] places it.
    #[serde(default)]
    pub store_newest: Option<(u64, u64)>,
    /// Since when each source has been watched: one that never spoke stays silent since then
    /// across a restart (it was since the process's start, so every restart resolved its
    /// SourceStale and paged again later).
    #[serde(default)]
    pub watched_since: std::collections::BTreeMap<String, Ts>,
    /// The app names with an `app` label of their own: kept across a restart, an app only the
    /// IdP had named no longer lost its label (and its alerts, to `other`) until the IdP
    /// named it again (helper-58). Empty in checkpoints from before it was kept.
    #[serde(default)]
    pub apps: Vec<String>,
    /// Whether each source (in order) mapped a correlation ID: one mapped since has records
    /// pending read without (empty in checkpoints from before it was kept).
    #[serde(default)]
    pub cid_mapped: Vec<bool>,
    /// How each source (in order) read actions ([`crate::parse::LineParser::reading`]): what
    /// is pending is read again where the reading now differs (empty in checkpoints from
    /// before it was kept: nothing is).
    #[serde(default)]
    pub readings: Vec<crate::parse::Reading>,
}

/// Why the checkpoint cannot be taken up under `current` (the config's source names in order):
/// a source it knew now stands at another place, so its pending operations would be credited
/// to another source. A source renamed in place, or added at the end, is fine.
pub fn moved_sources(saved: &[String], current: &[String]) -> Option<String> {
    let moved: Vec<String> = saved
        .iter()
        .enumerate()
        .filter_map(|(was, name)| {
            let now = current.iter().position(|c| c == name)?;
            (now != was).then(|| format!("{name:?} was source {} and is now {}", was + 1, now + 1))
        })
        .collect();
    (!moved.is_empty()).then(|| {
        format!(
            "the [[source]] blocks were reordered, or one taken out from among them, since the \
             checkpoint ({}): put them back in the order {} (a source may be renamed in place, \
             added at the end, or taken out from the end)",
            moved.join("; "),
            saved
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// The name every Parquet file the daemon writes starts with (`replay`'s start `replay-`).
pub const FILE_PREFIX: &str = "part";

/// Where a daemon file stands among all of them: `part-<start ms>-<pid>-<sequence>.parquet`,
/// its run's start, then its place in that run.
pub fn file_order(path: &Path) -> (u64, u64) {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let mut parts = stem
        .split('-')
        .skip(1)
        .map(|p| p.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.nth(1).unwrap_or(0))
}

/// Why the checkpoint cannot be taken up: the store holds daemon files committed after it
/// (later than the newest it knew, `newest`; or, for a checkpoint from before that was kept,
/// more than the `known` count), so it is an older checkpoint put back (from a backup, say).
/// Resuming would read the logs again from its older positions and write their rows a second
/// time. `daemon_files` are the store's files named [`FILE_PREFIX`]`-`. Comparing the newest
/// and not only the count also catches an old checkpoint after old partitions were archived.
pub fn older_than_store(
    known: u64,
    newest: Option<(u64, u64)>,
    daemon_files: &[PathBuf],
) -> Option<String> {
    let mut files: Vec<&PathBuf> = daemon_files.iter().collect();
    files.sort_by_key(|p| file_order(p));
    let newer: Vec<&PathBuf> = match newest {
        Some(newest) => files
            .iter()
            .copied()
            .filter(|p| file_order(p) > newest)
            .collect(),
        None => {
            let extra = (daemon_files.len() as u64).saturating_sub(known) as usize;
            files[files.len() - extra..].to_vec()
        }
    };
    if newer.is_empty() {
        return None;
    }
    let shown: Vec<String> = newer
        .iter()
        .rev()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    Some(format!(
        "the checkpoint is older than the store: the store holds {} Parquet file(s) the daemon \
         wrote after it (a checkpoint put back from a backup?). Resuming from it would read the \
         logs again from older positions and write their rows a second time. Put back the \
         newest checkpoint, or, if the logs still hold those rows, move aside the {} newest \
         file(s) to take them up again from this one (newest: {})",
        newer.len(),
        newer.len(),
        shown.join(", ")
    ))
}

/// What [`store`] writes: a [`Checkpoint`] borrowed from the live daemon, field for field, so
/// the state is serialized where it lies instead of being copied first.
#[derive(Debug, Serialize)]
pub struct CheckpointRef<'a> {
    pub version: u32,
    pub written_at: Ts,
    pub files: Vec<FilePosition>,
    pub engine: EngineStateRef<'a>,
    pub pending_files: &'a [PreparedFile],
    pub windows: &'a crate::slo::Windows,
    pub evidence: &'a crate::alert::Evidence,
    pub last_events: std::collections::BTreeMap<&'a str, Ts>,
    pub breach_rows: &'a std::collections::BTreeSet<(String, String, Ts)>,
    pub sources: Vec<&'a str>,
    pub store_files: Option<u64>,
    pub store_newest: Option<(u64, u64)>,
    pub watched_since: std::collections::BTreeMap<&'a str, Ts>,
    pub apps: Vec<String>,
    pub cid_mapped: &'a [bool],
    pub readings: &'a [crate::parse::Reading],
}

/// `<data_dir>/state/alerts.json`: the alert lifecycle, written whenever it notifies (not only
/// at checkpoints), so a restart neither pages twice nor loses a resolve.
pub fn alerts_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("alerts.json")
}

pub fn load_alerts(data_dir: &Path) -> anyhow::Result<crate::alert::AlertEngine> {
    let file = alerts_path(data_dir);
    let Some(bytes) = read_state(&file)? else {
        return Ok(Default::default());
    };
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not readable alert state (move it aside to forget every firing alert)",
            file.display()
        )
    })
}

pub fn store_alerts(data_dir: &Path, alerts: &crate::alert::AlertEngine) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(alerts).context("encoding the alert state")?;
    store_alert_bytes(data_dir, &bytes)
}

/// [`store_alerts`] of an alert state already encoded.
pub fn store_alert_bytes(data_dir: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_state(&alerts_path(data_dir), bytes)
}

/// The leaver episodes the daemon's last checkpoint in `data_dir` holds open, as `leavers`
/// rows, for an evidence pack: the store has a row for an open episode only once it is past
/// its deadline, so a pack from a daemon's store left out every leaver still inside it (one
/// whose disable failed included). Each is judged as of the checkpoint's clock, but no later
/// than its deadline (whether one past it was disabled in time may still be on its way, and
/// one that was not has a row of its own in the store) nor than a disable seen and not yet
/// settled. None without a checkpoint (a replay's store: it wrote every open episode).
pub fn open_leaver_rows(data_dir: &Path) -> anyhow::Result<Vec<crate::audit::schema::LeaverRow>> {
    /// What is read of the checkpoint: the rest is skipped.
    #[derive(Deserialize)]
    struct OpenLeavers {
        version: u32,
        engine: crate::engine::EpisodesOnly,
    }
    let file = path(data_dir);
    let Some(text) = read_state(&file)? else {
        return Ok(Vec::new());
    };
    let saved: OpenLeavers = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a readable checkpoint", file.display()))?;
    if saved.version != CHECKPOINT_VERSION {
        anyhow::bail!(
            "{} has version {}, this scimwatch reads version {CHECKPOINT_VERSION}",
            file.display(),
            saved.version
        );
    }
    let Some(clock) = saved.engine.clock() else {
        return Ok(Vec::new());
    };
    Ok((saved.engine.open_episodes())
        .map(|(episode, closing)| {
            let mut as_of = clock.min(episode.due_at());
            if let Some(closing) = closing {
                as_of = as_of.min(Ts(closing.0 - 1));
            }
            crate::audit::writer::leaver_row(episode, as_of.max(episode.initiated_at))
        })
        .collect())
}

/// `<data_dir>/state/aliases.json`: the `[apps] aliases` the daemon last started with, for
/// `export` without `--config` (an episode written under a spelling and ended under the app
/// it became an alias of is one), and for the next start (a spelling taken out of the
/// aliases cannot be given back to what was read under it).
fn aliases_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("aliases.json")
}

/// The aliases the daemon last started with (none if it never wrote them); an error names
/// the file that cannot be read.
pub fn load_aliases(data_dir: &Path) -> anyhow::Result<Option<crate::config::AppsConfig>> {
    let file = aliases_path(data_dir);
    let Some(bytes) = read_state(&file)? else {
        return Ok(None);
    };
    let aliases = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a list of aliases", file.display()))?;
    Ok(Some(crate::config::AppsConfig { aliases }))
}

pub fn store_aliases(data_dir: &Path, apps: &crate::config::AppsConfig) -> anyhow::Result<()> {
    write_state(&aliases_path(data_dir), &serde_json::to_vec(&apps.aliases)?)
}

/// A state file's bytes; `None` when there is none.
pub fn read_state(file: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(file) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// Writes a state file atomically, making its directory first.
pub fn write_state(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        crate::durable::create_dir_all(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    durable::write_atomic(file, bytes).with_context(|| format!("writing {}", file.display()))
}

/// `<data_dir>/state/checkpoint.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("checkpoint.json")
}

/// Loads the checkpoint, if there is one. A checkpoint that does not parse is an error naming
/// the file: starting over silently would re-read (or skip) everything.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<Checkpoint>> {
    let file = path(data_dir);
    let Some(text) = read_state(&file)? else {
        return Ok(None);
    };
    let checkpoint: Checkpoint = serde_json::from_slice(&text).with_context(|| {
        format!("{} is not a readable checkpoint (restore it from a backup; or, to start from the beginning of every file, move it aside together with the store's {}, or every row is written twice)", file.display(), crate::audit::schema::Table::store_dirs())
    })?;
    if checkpoint.version != CHECKPOINT_VERSION {
        anyhow::bail!(
            "{} has version {}, this scimwatch reads version {CHECKPOINT_VERSION}",
            file.display(),
            checkpoint.version
        );
    }
    Ok(Some(checkpoint))
}

/// Writes the checkpoint atomically, streamed to the file.
pub fn store(data_dir: &Path, checkpoint: &CheckpointRef<'_>) -> anyhow::Result<()> {
    let file = path(data_dir);
    let dir = file.parent().unwrap_or(data_dir);
    crate::durable::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    durable::write_atomic_with(&file, |out| {
        serde_json::to_writer(out, checkpoint).map_err(std::io::Error::other)
    })
    .with_context(|| format!("writing {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::{moved_sources, older_than_store};
    use std::path::PathBuf;

    /// A checkpoint put back from a backup beside a store written past it would double the
    /// rows written since (QA: only a missing checkpoint was caught). Files moved out of the
    /// store (archived) are not a reason to refuse.
    #[test]
    fn a_checkpoint_older_than_the_store_is_refused_and_names_the_newest_files() {
        let files: Vec<PathBuf> = [
            "operations/date=2026-07-01/part-1700000000000-42-000002.parquet",
            "operations/date=2026-07-02/part-1700000000000-42-000010.parquet",
            "leavers/date=2026-07-01/part-1700000000000-42-000003.parquet",
            "operations/date=2026-07-01/part-1800000000000-7-000001.parquet",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        // Knew the first run's files up to its third: two are newer.
        let why = older_than_store(2, Some((1_700_000_000_000, 3)), &files).unwrap();
        assert!(
            why.contains("holds 2 Parquet file(s) the daemon wrote after it")
                && why.contains("move aside the 2 newest"),
            "{why}"
        );
        let newest = why.split("(newest: ").nth(1).unwrap();
        assert!(
            newest.starts_with("operations/date=2026-07-01/part-1800000000000-7-000001.parquet, operations/date=2026-07-02/part-1700000000000-42-000010.parquet"),
            "{newest}"
        );
        assert_eq!(
            older_than_store(4, Some((1_800_000_000_000, 1)), &files),
            None
        );
        // Old partitions archived (fewer files than it counted), and still newer ones: refused.
        assert!(older_than_store(9, Some((1_700_000_000_000, 3)), &files).is_some());
        // A checkpoint from before the newest was kept: by count.
        assert!(older_than_store(2, None, &files).is_some());
        assert_eq!(older_than_store(4, None, &files), None);
        assert_eq!(older_than_store(9, None, &files), None);
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    /// The engine's pending state names sources by place: swapping two [[source]] blocks
    /// credited pending IdP operations to the gateway source (QA: `idp_source` = nginx).
    #[test]
    fn a_reorder_is_refused_and_a_rename_in_place_or_an_addition_at_the_end_is_not() {
        let saved = names(&["okta", "nginx"]);
        let why = moved_sources(&saved, &names(&["nginx", "okta"])).unwrap();
        assert!(
            why.contains("\"okta\" was source 1 and is now 2")
                && why.contains("the order \"okta\", \"nginx\""),
            "{why}"
        );
        assert_eq!(moved_sources(&saved, &names(&["okta", "nginx"])), None);
        assert_eq!(moved_sources(&saved, &names(&["okta-idp", "nginx"])), None);
        assert_eq!(
            moved_sources(&saved, &names(&["okta", "nginx", "trigger"])),
            None
        );
        assert!(moved_sources(&saved, &names(&["trigger", "okta", "nginx"])).is_some());
        // A checkpoint from before the list was kept.
        assert_eq!(moved_sources(&[], &names(&["nginx", "okta"])), None);
    }
}
