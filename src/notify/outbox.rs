//! Deliveries on disk until they are delivered or given up, in `data_dir/outbox/`, and
//! `data_dir/dead-letter.jsonl` for what finally failed. A restart, even after `kill -9`,
//! delivers what was waiting.
//!
//! The deliveries the writer takes together go to disk as one *segment*,
//! `<first id>.jsonl`, one delivery a line, written whole (a temporary, synced, renamed, the
//! directory synced): a page storm of thousands of deliveries is a few dozen files, not a
//! file each (created, synced, renamed and removed again, each delivery cost more CPU in the
//! kernel than the pipeline spent on a thousand lines). A delivery sent, dead-lettered or
//! replaced is appended to `done.log` (not synced: after a power cut a page may go twice,
//! never not at all); a segment goes once all of its deliveries are done (the last is not
//! noted unless the file cannot be removed), and `done.log` once no segment is left (in an
//! endless storm it grows by ~20 bytes a delivery until the next start tidies it). Files
//! `<id>.json` of one delivery each (written by earlier versions) are read as segments of one.

use crate::alert::Notification;
use crate::time::Ts;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// One notification for one target (`receiver/email`, `receiver/webhook`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique and increasing; a segment is named after its first.
    pub id: u64,
    pub target: String,
    pub notification: Notification,
}

#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    dead_letter: PathBuf,
    held: Arc<Mutex<Held>>,
}

/// What the outbox holds on disk: the segments and which of their deliveries are not done.
#[derive(Debug, Default)]
struct Held {
    /// Segment file → the ids in it not yet done.
    segments: HashMap<PathBuf, HashSet<u64>>,
    /// Delivery id → its segment.
    segment_of: HashMap<u64, PathBuf>,
    /// Files left where they are for the next start (unreadable, not set aside, or not
    /// removable): never removed while running, so `done.log` stays beside them and notes
    /// every one of their deliveries done.
    pinned: HashSet<PathBuf>,
    /// `done.log`, open for appending while a segment is on disk.
    done_log: Option<File>,
    /// The highest id found at start, done or not (a file's name counts for a file that
    /// cannot be read): new ids start above it even if the clock has gone back.
    highest: u64,
}

/// A segment as read from disk.
struct Segment {
    path: PathBuf,
    deliveries: Vec<Delivery>,
    /// Lines that are not a delivery: (line number, error).
    unreadable: Vec<(usize, String)>,
    /// The file could not be read (an I/O error: perhaps not for good).
    unread: Option<String>,
}

const DONE_LOG: &str = "done.log";

impl Outbox {
    pub fn open(data_dir: &Path) -> std::io::Result<Outbox> {
        let dir = data_dir.join("outbox");
        crate::durable::create_dir_all(&dir)?;
        crate::durable::remove_leftovers(&dir)?;
        Ok(Outbox {
            dir,
            dead_letter: data_dir.join("dead-letter.jsonl"),
            held: Arc::default(),
        })
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // A panic elsewhere while holding it leaves nothing half-updated that matters here.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put(&self, delivery: &Delivery) -> std::io::Result<()> {
        self.put_all(std::slice::from_ref(delivery))
    }

    /// Writes deliveries as one segment, whole or not at all (on an error no file is left).
    /// Once renamed into place they are held, even if the directory then cannot be synced
    /// (logged): the file is whole, and written again a delivery could go twice.
    pub fn put_all<'a>(
        &self,
        deliveries: impl IntoIterator<Item = &'a Delivery>,
    ) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        let mut ids = HashSet::new();
        let mut first = None;
        for delivery in deliveries {
            serde_json::to_writer(&mut bytes, delivery).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            ids.insert(delivery.id);
            first.get_or_insert(delivery.id);
        }
        let Some(first) = first else {
            return Ok(());
        };
        let path = self.segment_path(first);
        let tmp = crate::durable::tmp_path(&path);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
        self.hold(&path, ids);
        if let Err(error) = crate::durable::sync_dir(&self.dir) {
            tracing::warn!(%error, dir = %self.dir.display(), "Cannot sync the outbox directory; its newest deliveries may not survive a power cut.");
        }
        Ok(())
    }

    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.jsonl"))
    }

    fn hold(&self, path: &Path, ids: HashSet<u64>) {
        let mut held = self.held();
        for &id in &ids {
            // In two files (a damaged segment written again, its original not removable):
            // the newer holds it, so the older's others can still finish.
            if let Some(older) = held.segment_of.insert(id, path.to_path_buf()) {
                if older != path {
                    if let Some(left) = held.segments.get_mut(&older) {
                        left.remove(&id);
                    }
                }
            }
        }
        held.segments.insert(path.to_path_buf(), ids);
    }

    /// Holds a file that stays where it is until the next start.
    fn pin(&self, path: &Path, ids: HashSet<u64>) {
        self.hold(path, ids);
        self.held().pinned.insert(path.to_path_buf());
    }

    /// Marks a delivery done: its segment goes once all of its deliveries are done.
    pub fn remove(&self, id: u64) {
        let mut held = self.held();
        let Some(path) = held.segment_of.remove(&id) else {
            return; // delivered from memory only (the outbox could not be written)
        };
        let finished = held.segments.get_mut(&path).is_some_and(|left| {
            left.remove(&id);
            left.is_empty()
        });
        if finished && !held.pinned.contains(&path) {
            match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    // Kept (with nothing left in it) so that `done.log` stays and says this
                    // last one is done too: the next start sends none of it.
                    tracing::warn!(%error, file = %path.display(), "Cannot remove a delivered segment from the outbox.");
                    held.pinned.insert(path.clone());
                }
                _ => {
                    held.segments.remove(&path);
                    if held.segments.is_empty() {
                        held.done_log = None;
                        self.remove_done_log();
                        return;
                    }
                    if held.pinned.is_empty() {
                        return;
                    }
                    // A pinned file may hold this one too (a damaged segment written again
                    // whose original could not be removed): noted, or every start sends it.
                }
            }
        }
        if held.done_log.is_none() {
            held.done_log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(DONE_LOG))
                .inspect_err(|error| tracing::warn!(%error, "Cannot open the outbox's done.log; a restart may send its delivered notifications again."))
                .ok();
        }
        if let Some(log) = held.done_log.as_mut() {
            // One write: a line cut short by a crash cannot join the next into another id
            // (and a last line without its newline is not read).
            if let Err(error) = log.write_all(format!("{id}\n").as_bytes()) {
                tracing::warn!(%error, "Cannot append to the outbox's done.log; a restart may send a delivered notification again.");
            }
        }
    }

    fn remove_done_log(&self) {
        if let Err(error) = std::fs::remove_file(self.dir.join(DONE_LOG)) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, "Cannot remove the outbox's done.log.");
            }
        }
    }

    /// At start: everything waiting, oldest first, and the disk settled: a segment whose
    /// deliveries are all done goes, one with unreadable lines is set aside as
    /// `*.unreadable` (logged) once its readable deliveries are written again, and `done.log`
    /// keeps only the ids of the segments still there. A segment that cannot be read at all
    /// (an I/O error), set aside or removed is left where it is for the next start (logged),
    /// and `done.log` kept beside it.
    pub fn load(&self) -> Vec<Delivery> {
        let (segments, done) = scan(&self.dir);
        let named = segments
            .iter()
            .filter_map(|s| s.path.file_stem()?.to_str()?.parse().ok());
        let listed = segments.iter().flat_map(|s| &s.deliveries).map(|d| d.id);
        self.held().highest = done
            .iter()
            .copied()
            .chain(named)
            .chain(listed)
            .max()
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut kept_done = Vec::new();
        for segment in segments {
            if let Some(error) = &segment.unread {
                tracing::error!(file = %segment.path.display(), %error, "Cannot read an outbox segment; it is left for the next start.");
                // Which of its deliveries are done is not known: `done.log` keeps them all.
                kept_done.extend(done.iter().copied());
                self.pin(&segment.path, HashSet::new());
                continue;
            }
            let (left, finished): (Vec<Delivery>, Vec<Delivery>) = segment
                .deliveries
                .into_iter()
                .partition(|d| !done.contains(&d.id));
            if !segment.unreadable.is_empty() {
                for (line, error) in &segment.unreadable {
                    tracing::error!(file = %segment.path.display(), line, %error, "Unreadable outbox entry; its segment is set aside.");
                }
                if !self.set_aside(&segment.path, &left) {
                    kept_done.extend(finished.iter().map(|d| d.id));
                }
            } else if left.is_empty() {
                match std::fs::remove_file(&segment.path) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        tracing::warn!(%error, file = %segment.path.display(), "Cannot remove a delivered segment from the outbox.");
                        kept_done.extend(finished.iter().map(|d| d.id));
                        self.pin(&segment.path, HashSet::new());
                    }
                    _ => {}
                }
            } else {
                kept_done.extend(finished.iter().map(|d| d.id));
                self.hold(&segment.path, left.iter().map(|d| d.id).collect());
            }
            out.extend(left);
        }
        let log = self.dir.join(DONE_LOG);
        let tidied = if kept_done.is_empty() {
            std::fs::remove_file(&log).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
        } else {
            kept_done.sort_unstable();
            kept_done.dedup();
            let text: String = kept_done.iter().map(|id| format!("{id}\n")).collect();
            crate::durable::write_atomic(&log, text.as_bytes())
        };
        if let Err(error) = tidied {
            tracing::warn!(%error, "Cannot tidy the outbox's done.log.");
        }
        out.sort_by_key(|d| d.id);
        out
    }

    /// A segment with unreadable lines: a copy of it goes aside as `*.unreadable`, then its
    /// readable deliveries not yet done are written again (under its own name if its first
    /// line was readable), and only then does the original go. Should a step fail, the
    /// original stays for the next start (false), held: its deliveries are sent from it now
    /// and noted done as usual.
    fn set_aside(&self, path: &Path, left: &[Delivery]) -> bool {
        let aside = path.with_extension("unreadable");
        let copied =
            std::fs::read(path).and_then(|bytes| crate::durable::write_atomic(&aside, &bytes));
        if let Err(error) = copied {
            tracing::error!(%error, file = %aside.display(), "Cannot set an unreadable outbox segment aside; it is left for the next start.");
            self.pin(path, left.iter().map(|d| d.id).collect());
            return false;
        }
        if let Err(error) = self.put_all(left) {
            tracing::error!(%error, "Cannot write the readable deliveries of an unreadable segment again; it is left for the next start.");
            self.pin(path, left.iter().map(|d| d.id).collect());
            return false;
        }
        let rewritten = left
            .first()
            .is_some_and(|d| self.segment_path(d.id) == path);
        if !rewritten {
            if let Err(error) = std::fs::remove_file(path) {
                tracing::error!(%error, file = %path.display(), "Cannot remove an unreadable outbox segment once set aside; it is left for the next start.");
                // Its deliveries are held by the segment just written.
                self.pin(path, HashSet::new());
                return false;
            }
        }
        true
    }

    /// Whether a delivery is on disk and not yet done.
    pub fn holds(&self, id: u64) -> bool {
        self.held().segment_of.contains_key(&id)
    }

    /// The highest delivery id found at start, done or not.
    pub fn highest_id(&self) -> u64 {
        self.held().highest
    }

    /// While running (the queue was full): the deliveries on disk not yet done, oldest first.
    pub fn rescan(&self) -> Vec<Delivery> {
        let (segments, _) = scan(&self.dir);
        let held = self.held();
        let mut out: Vec<Delivery> = segments
            .into_iter()
            .filter_map(|s| Some((held.segments.get(&s.path)?, s.deliveries)))
            .flat_map(|(left, deliveries)| deliveries.into_iter().filter(|d| left.contains(&d.id)))
            .collect();
        out.sort_by_key(|d| d.id);
        out
    }

    /// Appends to the dead-letter file (one JSON object per line) and drops the outbox entry.
    pub fn dead_letter(&self, delivery: &Delivery, at: Ts, error: &str) {
        let line = serde_json::json!({
            "at": at,
            "target": delivery.target,
            "error": error,
            "notification": delivery.notification,
        });
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.dead_letter)?;
            let mut text = line.to_string();
            text.push('\n');
            file.write_all(text.as_bytes())?;
            file.sync_data()
        })();
        match result {
            Ok(()) => {
                tracing::error!(target_name = %delivery.target, key = %delivery.notification.dedup_key, %error, file = %self.dead_letter.display(), "Notification not delivered; written to the dead-letter file.")
            }
            Err(io) => {
                tracing::error!(target_name = %delivery.target, key = %delivery.notification.dedup_key, %error, write_error = %io, "Notification not delivered, and the dead-letter file cannot be written.")
            }
        }
        self.remove(delivery.id);
    }
}

/// The ids of the deliveries waiting in `data_dir`'s outbox, read without changing anything
/// (for tests and tools; a running daemon's outbox may change meanwhile).
pub fn waiting_ids(data_dir: &Path) -> Vec<u64> {
    let (segments, done) = scan(&data_dir.join("outbox"));
    let mut ids: Vec<u64> = segments
        .iter()
        .flat_map(|s| &s.deliveries)
        .map(|d| d.id)
        .filter(|id| !done.contains(id))
        .collect();
    ids.sort_unstable();
    ids
}

/// Reads every segment (`*.jsonl`, and `*.json` of earlier versions) and the done ids.
fn scan(dir: &Path) -> (Vec<Segment>, HashSet<u64>) {
    let done: HashSet<u64> = std::fs::read_to_string(dir.join(DONE_LOG))
        .map(|text| {
            // A last line without its newline may be an append cut short: not read.
            text.split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut segments = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (segments, done);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if crate::durable::is_tmp_name(&name)
            || path.extension().is_none_or(|e| e != "jsonl" && e != "json")
        {
            continue;
        }
        let mut segment = Segment {
            path,
            deliveries: Vec::new(),
            unreadable: Vec::new(),
            unread: None,
        };
        match std::fs::read(&segment.path) {
            Ok(bytes) => {
                for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<Delivery>(line) {
                        Ok(delivery) => segment.deliveries.push(delivery),
                        Err(error) => segment.unreadable.push((n + 1, error.to_string())),
                    }
                }
            }
            Err(error) => segment.unread = Some(error.to_string()),
        }
        segments.push(segment);
    }
    (segments, done)
}

#[cfg(test)]
mod tests {
    use super::*;
    // The notifier's tests make their deliveries the same way.
    use crate::notify::tests::overdue_delivery as delivery;

    /// A damaged segment written again whose original could not be removed: the original is
    /// pinned with nothing of its own, and the rewrite's last delivery, whose segment goes,
    /// is still noted done, or every start would send it again from the original.
    #[test]
    fn the_last_of_a_rewrite_is_noted_done_while_its_original_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let original = outbox.segment_path(1);
        std::fs::write(&original, "{not json\n").unwrap();
        outbox.put_all(&[delivery(2), delivery(3)]).unwrap();
        outbox.pin(&original, HashSet::new());
        outbox.remove(2);
        outbox.remove(3);
        assert!(!outbox.segment_path(2).exists());
        assert_eq!(
            std::fs::read_to_string(outbox.dir.join(DONE_LOG)).unwrap(),
            "2\n3\n"
        );
    }

    /// New ids start above every id on disk, done or not, and above the name of a file that
    /// cannot be read.
    #[test]
    fn the_highest_id_counts_done_ones_and_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.put_all(&[delivery(5)]).unwrap();
        std::fs::write(outbox.dir.join(DONE_LOG), "500\n").unwrap();
        assert_eq!(Outbox::open(dir.path()).unwrap().load(), [delivery(5)]);
        std::fs::create_dir_all(outbox.segment_path(900).join("x")).unwrap();
        std::fs::write(outbox.dir.join(DONE_LOG), "500\n").unwrap();
        let restarted = Outbox::open(dir.path()).unwrap();
        restarted.load();
        assert_eq!(restarted.highest_id(), 900);
    }
}
