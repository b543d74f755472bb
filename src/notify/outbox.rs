//! Deliveries on disk until they are delivered or given up: one small file per delivery in
//! `data_dir/outbox/` (written atomically before it is queued, removed once sent), and
//! `data_dir/dead-letter.jsonl` for what finally failed. A restart, even after `kill -9`,
//! delivers what was waiting.

use crate::alert::Notification;
use crate::time::Ts;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One notification for one target (`receiver/email`, `receiver/webhook`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique and increasing: the outbox file name.
    pub id: u64,
    pub target: String,
    pub notification: Notification,
}

#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    dead_letter: PathBuf,
}

impl Outbox {
    pub fn open(data_dir: &Path) -> std::io::Result<Outbox> {
        let dir = data_dir.join("outbox");
        crate::durable::create_dir_all(&dir)?;
        crate::durable::remove_leftovers(&dir)?;
        Ok(Outbox {
            dir,
            dead_letter: data_dir.join("dead-letter.jsonl"),
        })
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.json"))
    }

    pub fn put(&self, delivery: &Delivery) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(delivery).map_err(std::io::Error::other)?;
        crate::durable::write_atomic(&self.path(delivery.id), &bytes)
    }

    /// [`Outbox::put`] of many at once, as one group commit: every file written, then each
    /// synced on the handle that wrote it (the disk takes the later ones with the first; a
    /// second handle could miss a write error, as on NFS), then all renamed, and the
    /// directory synced once rather than once a file. The caller keeps a group to a few
    /// hundred, well inside the open-file limit. On an error what was renamed stays (it is
    /// whole, see [`Outbox::holds`]) and the temporaries go.
    pub fn put_all<'a>(
        &self,
        deliveries: impl IntoIterator<Item = &'a Delivery>,
    ) -> std::io::Result<()> {
        let mut written = Vec::new();
        let result = (|| {
            for delivery in deliveries {
                let bytes = serde_json::to_vec(delivery).map_err(std::io::Error::other)?;
                let path = self.path(delivery.id);
                let tmp = crate::durable::tmp_path(&path);
                let file = std::fs::File::create(&tmp)?;
                // Listed before it is written: a failed write's temporary goes too.
                written.push((tmp, path, Some(file)));
                if let Some((_, _, Some(file))) = written.last_mut() {
                    file.write_all(&bytes)?;
                }
            }
            for (_, _, file) in &mut written {
                if let Some(file) = file.take() {
                    file.sync_all()?;
                }
            }
            for (tmp, path, _) in &written {
                std::fs::rename(tmp, path)?;
            }
            crate::durable::sync_dir(&self.dir)
        })();
        if result.is_err() {
            for (tmp, _, _) in &written {
                let _ = std::fs::remove_file(tmp);
            }
        }
        result
    }

    /// Whether a delivery's file is in the outbox (renamed whole by a group commit that then
    /// failed: written again, a rescan might have sent and removed it, and it would go twice).
    pub fn holds(&self, id: u64) -> bool {
        self.path(id).is_file()
    }

    pub fn remove(&self, id: u64) {
        if let Err(error) = std::fs::remove_file(self.path(id)) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, id, "Cannot remove a delivered notification from the outbox.");
            }
        }
    }

    /// Everything waiting, oldest first; an unreadable file is renamed `*.unreadable` and logged.
    pub fn load(&self) -> Vec<Delivery> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Delivery>(&b).map_err(|e| e.to_string()))
            {
                Ok(delivery) => out.push(delivery),
                Err(error) => {
                    tracing::error!(file = %path.display(), %error, "Unreadable outbox entry; moved aside.");
                    let _ = std::fs::rename(&path, path.with_extension("unreadable"));
                }
            }
        }
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
