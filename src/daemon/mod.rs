//! The daemon (`scimwatch run`): the replay core fed by tailers, with a live clock, exactly-once
//! checkpoints, memory caps and a graceful stop.
//!
//! One pipeline thread owns everything that must stay consistent — tailer, parsers, engine,
//! Parquet writer, checkpoint — so a checkpoint is a single point in the stream. Other threads
//! only wake it (inotify, signals) or read its status.
//!
//! Lines of all files are merged by time as in `replay`: a record is processed only once no
//! file with unread bytes could still hold an earlier one. So a backlog (start-up, a restart
//! after downtime) is processed exactly as `replay` would, and caught-up live data as it comes.
//!
//! The clock: while any file has unread bytes the engine advances on the event watermark, as
//! in `replay`. Once every file is read to its end, silence is information — no line older
//! than `allowed_lateness_secs` can still arrive — so the watermark moves with the wall clock
//! (`max(watermark, wall − lateness)`). The live clock shown and used for deadlines is
//! `min(wall clock, watermark + lateness)`: leaver deadlines fire on time with no new input.

pub mod checkpoint;
pub mod status;

use crate::audit::schema::Table;
use crate::audit::writer::commit_prepared;
use crate::audit::AuditWriter;
use crate::config::Config;
use crate::engine::{Engine, EngineSettings, Output};
use crate::model::{Outcome, Record};
use crate::parse::{LineParser, ParseError, Reason};
use crate::source::reader::Line;
use crate::source::IngestStats;
use crate::tail::{TailSource, Tailer};
use crate::time::{Ts, MICROS_PER_SEC};
use anyhow::Context;
use status::{LiveStatus, OverdueLeaver};
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What other threads tell the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Something changed on disk (inotify): poll now rather than at the next tick.
    Wake,
    /// SIGINT/SIGTERM: stop reading, commit, checkpoint, return.
    Shutdown,
}

/// The wall clock, outside the core.
pub fn wall_clock() -> Ts {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ts(now.as_micros().min(i64::MAX as u128) as i64)
}

enum Item {
    Record(Box<Record>),
    Error(ParseError, u64),
    Blank,
}

struct Queued {
    item: Item,
    time: Option<Ts>,
    number: u64,
    next: u64,
}

/// The daemon's pipeline.
pub struct Pipeline {
    config: Config,
    parsers: Vec<LineParser>,
    engine: Engine,
    tailer: Tailer,
    audit: AuditWriter,
    queues: BTreeMap<u32, VecDeque<Queued>>,
    stats: IngestStats,
    status: Arc<Mutex<LiveStatus>>,
    live: LiveStatus,
    lateness_micros: i64,
    last_checkpoint: Instant,
    /// Overdue episodes already logged (app, user, initiated_at), so each is logged once.
    reported_overdue: std::collections::BTreeSet<(String, String, Ts)>,
}

impl Pipeline {
    /// Opens the store, rolls a half-finished checkpoint forward and restores the engine.
    pub fn open(config: Config, status: Arc<Mutex<LiveStatus>>) -> anyhow::Result<Pipeline> {
        let data_dir = config.storage.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating storage.data_dir {}", data_dir.display()))?;
        let saved = checkpoint::load(&data_dir)?;
        let settings = EngineSettings::from_config(&config);
        let (engine, positions) = match saved {
            Some(saved) => {
                // Files written for the last checkpoint but perhaps not yet renamed.
                commit_prepared(&saved.pending_files)?;
                tracing::info!(files = saved.files.len(), written_at = %saved.written_at, "Resuming from checkpoint.");
                (Engine::restore(saved.engine, settings), saved.files)
            }
            None => (Engine::new(settings), Vec::new()),
        };
        let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
        let prefix = format!("part-{}-{}", wall_clock().0, std::process::id());
        let audit = AuditWriter::open(
            &data_dir,
            config.pipeline.parquet_rows_per_file,
            names,
            prefix,
        )?;
        let mut parsers = Vec::new();
        let mut sources = Vec::new();
        let mut stats = IngestStats::default();
        for (index, source) in config.sources.iter().enumerate() {
            parsers.push(LineParser::new(source, &config.apps, index as u16)?);
            sources.push(TailSource {
                name: source.name.clone(),
                globs: config.source_globs(source),
                max_line_bytes: source.max_line_bytes,
            });
            stats.register(&source.name);
        }
        let tailer = Tailer::new(
            sources,
            positions,
            config.pipeline.read_budget_bytes,
            Duration::from_secs(config.pipeline.rotate_wait_secs),
        );
        let lateness_micros =
            (config.slo.allowed_lateness_secs as i64).saturating_mul(MICROS_PER_SEC);
        Ok(Pipeline {
            config,
            parsers,
            engine,
            tailer,
            audit,
            queues: BTreeMap::new(),
            stats,
            status,
            live: LiveStatus::default(),
            lateness_micros,
            last_checkpoint: Instant::now(),
            reported_overdue: std::collections::BTreeSet::new(),
        })
    }

    /// Directories to watch for wake-ups.
    pub fn watch_dirs(&self) -> Vec<std::path::PathBuf> {
        self.tailer.watch_dirs()
    }

    /// Runs until `Shutdown` (or the control channel closes).
    pub fn run(mut self, control: Receiver<Control>) -> anyhow::Result<()> {
        let poll = Duration::from_millis(self.config.pipeline.poll_interval_ms);
        loop {
            self.step(wall_clock())?;
            self.live.ready = true;
            self.publish();
            match control.recv_timeout(poll) {
                Ok(Control::Wake) | Err(RecvTimeoutError::Timeout) => {
                    // Coalesce a burst of wake-ups into one pass.
                    while let Ok(message) = control.try_recv() {
                        if message == Control::Shutdown {
                            return self.stop();
                        }
                    }
                }
                Ok(Control::Shutdown) | Err(RecvTimeoutError::Disconnected) => return self.stop(),
            }
        }
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.checkpoint(wall_clock())?;
        self.publish();
        tracing::info!("Stopped: rows committed and checkpoint written.");
        Ok(())
    }

    /// One pass: read, merge, judge, write, and checkpoint when due.
    pub fn step(&mut self, wall: Ts) -> anyhow::Result<()> {
        let parsers = &self.parsers;
        let queues = &mut self.queues;
        let stats = &mut self.stats;
        self.tailer
            .poll(&mut |source, line| {
                let parser = &parsers[source.source];
                stats.line(&parser.name);
                let queued = match line {
                    Line::TooLong {
                        length,
                        number,
                        offset,
                        next,
                    } => Queued {
                        item: Item::Error(
                            ParseError {
                                reason: Reason::LineTooLong,
                                detail: format!(
                                    "{length} bytes (max_line_bytes = {})",
                                    parser.max_line_bytes
                                ),
                            },
                            offset,
                        ),
                        time: None,
                        number,
                        next,
                    },
                    Line::Text {
                        bytes,
                        number,
                        offset,
                        next,
                    } => {
                        if bytes.iter().all(u8::is_ascii_whitespace) {
                            Queued {
                                item: Item::Blank,
                                time: None,
                                number,
                                next,
                            }
                        } else {
                            match parser.parse(bytes, source.file_id, number) {
                                Ok(record) => Queued {
                                    time: Some(record.time()),
                                    item: Item::Record(Box::new(record)),
                                    number,
                                    next,
                                },
                                Err(error) => Queued {
                                    item: Item::Error(error, offset),
                                    time: None,
                                    number,
                                    next,
                                },
                            }
                        }
                    }
                };
                queues.entry(source.file_id).or_default().push_back(queued);
            })
            .context("reading log files")?;
        self.merge();
        let caught_up = self.tailer.caught_up() && self.queues.values().all(VecDeque::is_empty);
        let lateness = self.lateness_micros;
        let floor = Ts(wall.0.saturating_sub(lateness));
        let watermark = self.engine.watermark();
        let effective = match (caught_up, watermark) {
            (true, Some(w)) => w.max(floor),
            (true, None) => floor,
            (false, Some(w)) => w,
            (false, None) => Ts(i64::MIN),
        };
        let clock = Ts(wall.0.min(effective.0.saturating_add(lateness)));
        self.engine.advance(wall.min(effective));
        let evictions = self.engine.enforce_caps(
            self.config.pipeline.max_pending_joins,
            self.config.pipeline.max_open_episodes,
        );
        self.live.evicted_joins += evictions.joins;
        self.live.evicted_episodes += evictions.episodes;
        if evictions.joins + evictions.episodes > 0 {
            tracing::warn!(
                joins = evictions.joins,
                episodes = evictions.episodes,
                "Memory cap reached: oldest pending state settled early."
            );
        }
        let outputs: Vec<Output> = self.engine.drain().collect();
        for output in &outputs {
            self.audit.add(output, wall, clock);
            self.count(output);
        }
        self.live.clock = Some(clock);
        self.live.watermark = watermark;
        self.live.caught_up = caught_up;
        self.live.join_pending = self.engine.join_pending();
        self.live.leavers_open = self.engine.open_episodes().len();
        self.live.leavers_overdue = self
            .engine
            .overdue_episodes(clock)
            .into_iter()
            .map(|e| OverdueLeaver {
                app: e.app.clone(),
                user: e.user().to_string(),
                high_risk: e.high_risk,
                initiated_at: e.initiated_at,
                due_at: e.due_at(),
                correlation_ids: e.correlation_ids.clone(),
            })
            .collect();
        let overdue: std::collections::BTreeSet<(String, String, Ts)> = self
            .live
            .leavers_overdue
            .iter()
            .map(|o| (o.app.clone(), o.user.clone(), o.initiated_at))
            .collect();
        for leaver in &self.live.leavers_overdue {
            if !self.reported_overdue.contains(&(
                leaver.app.clone(),
                leaver.user.clone(),
                leaver.initiated_at,
            )) {
                tracing::warn!(app = %leaver.app, user = %leaver.user, high_risk = leaver.high_risk, initiated_at = %leaver.initiated_at, due_at = %leaver.due_at, "Leaver overdue: still not disabled.");
            }
        }
        self.reported_overdue = overdue;
        let interval = Duration::from_secs(self.config.pipeline.checkpoint_interval_secs);
        if self.audit.needs_flush() || self.last_checkpoint.elapsed() >= interval {
            self.checkpoint(wall)?;
        }
        Ok(())
    }

    /// Processes queued lines in time order across files, never past a file that still has
    /// unread bytes and nothing queued (its next line may be earlier).
    fn merge(&mut self) {
        loop {
            let blocked = self
                .queues
                .iter()
                .any(|(id, q)| q.is_empty() && self.tailer.has_unread(*id));
            let mut best: Option<(Ts, u32)> = None;
            let mut untimed: Option<u32> = None;
            for (id, queue) in &self.queues {
                match queue.front() {
                    Some(Queued { time: None, .. }) => {
                        untimed = Some(*id);
                        break;
                    }
                    Some(Queued { time: Some(t), .. }) if best.is_none_or(|(bt, _)| *t < bt) => {
                        best = Some((*t, *id));
                    }
                    _ => {}
                }
            }
            let file = match (untimed, best) {
                (Some(id), _) => id,
                (None, Some(_)) if blocked => return,
                (None, Some((_, id))) => id,
                (None, None) => return,
            };
            let Some(queued) = self.queues.get_mut(&file).and_then(VecDeque::pop_front) else {
                return;
            };
            let source = self.tailer_source_name(file);
            match queued.item {
                Item::Record(record) => {
                    if let Some(source) = &source {
                        let entry = self.stats.sources.entry(source.clone()).or_default();
                        let time = record.time();
                        entry.last_event = Some(entry.last_event.map_or(time, |t| t.max(time)));
                    }
                    self.engine.ingest(*record);
                }
                Item::Error(error, offset) => {
                    let path = self
                        .tailer
                        .path_of(file)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    tracing::warn!(source = source.as_deref().unwrap_or(""), file = %path, line = queued.number, offset, reason = error.reason.as_str(), error = %error.detail, "Line set aside.");
                    self.stats.error_in(
                        source.as_deref().unwrap_or(""),
                        path,
                        queued.number,
                        offset,
                        &error,
                    );
                }
                Item::Blank => {}
            }
            self.tailer.mark_consumed(file, queued.next, queued.number);
        }
    }

    fn tailer_source_name(&self, file: u32) -> Option<String> {
        self.tailer
            .source_of(file)
            .map(|index| self.parsers[index].name.clone())
    }

    /// Commits buffered rows and advances the checkpoint, exactly once (see `checkpoint`).
    fn checkpoint(&mut self, wall: Ts) -> anyhow::Result<()> {
        let prepared = self.audit.prepare()?;
        let saved = checkpoint::Checkpoint {
            version: checkpoint::CHECKPOINT_VERSION,
            written_at: wall,
            files: self.tailer.positions(),
            engine: self.engine.snapshot(),
            pending_files: prepared.clone(),
        };
        checkpoint::store(&self.config.storage.data_dir, &saved)?;
        commit_prepared(&prepared)?;
        self.last_checkpoint = Instant::now();
        self.live.checkpoints += 1;
        self.live.last_checkpoint = Some(wall);
        for table in Table::ALL {
            self.live
                .parquet_rows
                .insert(table.name(), self.audit.rows_written(table));
        }
        Ok(())
    }

    fn count(&mut self, output: &Output) {
        match output {
            Output::Operation(op) => {
                let stage = self.live.stages.entry(op.stage.as_str()).or_default();
                match op.outcome {
                    Outcome::Succeeded => stage.succeeded += 1,
                    Outcome::Failed => stage.failed += 1,
                    Outcome::Unconfirmed => stage.unconfirmed += 1,
                    Outcome::Skipped => self.live.skipped += 1,
                    Outcome::Unattributed => self.live.unattributed += 1,
                }
                if matches!(op.outcome, Outcome::Failed | Outcome::Unconfirmed) {
                    if let Some(cause) = op.cause {
                        *self.live.causes.entry(cause.as_str()).or_default() += 1;
                    }
                }
                if op.disagreement {
                    self.live.disagreements += 1;
                }
            }
            Output::Episode(episode) => {
                if episode.state == crate::judge::EpisodeState::Disabled {
                    self.live.leavers_disabled += 1;
                }
            }
            Output::PostDisable(activity) => {
                self.live.post_disable_requests += 1;
                tracing::warn!(app = %activity.app, user = %activity.user, time = %activity.time, "Request made as a disabled user.");
            }
        }
    }

    fn publish(&mut self) {
        for (name, source) in &self.stats.sources {
            self.live.lines.insert(name.clone(), source.lines);
            self.live
                .parse_errors
                .insert(name.clone(), source.error_count());
        }
        self.live.tail = self.tailer.counters().into();
        if let Ok(mut status) = self.status.lock() {
            *status = self.live.clone();
        }
    }
}
