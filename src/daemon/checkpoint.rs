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
            "the [[source]] blocks were reordered since the checkpoint ({}): put them back in \
             the order {} (a source may be renamed in place, or added at the end)",
            moved.join("; "),
            saved
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
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
}

/// `<data_dir>/state/alerts.json`: the alert lifecycle, written whenever it notifies (not only
/// at checkpoints), so a restart neither pages twice nor loses a resolve.
pub fn alerts_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("alerts.json")
}

pub fn load_alerts(data_dir: &Path) -> anyhow::Result<crate::alert::AlertEngine> {
    let file = alerts_path(data_dir);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not readable alert state (move it aside to forget every firing alert)",
                file.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

pub fn store_alerts(data_dir: &Path, alerts: &crate::alert::AlertEngine) -> anyhow::Result<()> {
    let file = alerts_path(data_dir);
    let dir = file.parent().unwrap_or(data_dir);
    crate::durable::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = serde_json::to_vec(alerts).context("encoding the alert state")?;
    durable::write_atomic(&file, &bytes).with_context(|| format!("writing {}", file.display()))
}

/// `<data_dir>/state/checkpoint.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("checkpoint.json")
}

/// Loads the checkpoint, if there is one. A checkpoint that does not parse is an error naming
/// the file: starting over silently would re-read (or skip) everything.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<Checkpoint>> {
    let file = path(data_dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let checkpoint: Checkpoint = serde_json::from_str(&text).with_context(|| {
        format!("{} is not a readable checkpoint (restore it from a backup; or, to start from the beginning of every file, move it aside together with the store's operations/ and leavers/, or every row is written twice)", file.display())
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
    use super::moved_sources;

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
