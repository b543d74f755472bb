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
//! (`max(watermark, wall − lateness)`; the engine, which keeps the lateness for late lines
//! itself, is given the wall clock). The live clock shown and used for deadlines is
//! `min(wall clock, watermark + lateness)`: leaver deadlines fire on time with no new input.

pub mod checkpoint;
pub mod status;

use crate::alert::conditions::Freshness;
use crate::audit::schema::Table;
use crate::audit::writer::commit_prepared;
use crate::audit::AuditWriter;
use crate::config::Config;
use crate::engine::{Engine, EngineSettings, Output};
use crate::http::metrics::{self as m, Metrics};
use crate::http::RecentOperations;
use crate::model::{Outcome, Record};
use crate::parse::{LineParser, ParseError, Reason};
use crate::source::reader::Line;
use crate::source::IngestStats;
use crate::tail::{TailSource, Tailer};
use crate::time::{Ts, MICROS_PER_SEC};
use anyhow::Context;
use status::{LiveStatus, OpenLeaver, OverdueLeaver};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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

/// How often the published views (the status behind the API and `status`, the lists of open
/// and overdue leavers, the overdue log lines) are rebuilt at most. Counters, gauges, alerts
/// and Parquet are updated every pass regardless.
const VIEW_INTERVAL: Duration = Duration::from_millis(100);

/// How many open (and overdue) leavers the status lists, oldest first; gauges count them all.
const MAX_LISTED: usize = 1000;

/// An episode's identity in the daemon's breach bookkeeping: app, user, initiated_at.
type BreachKey = (String, String, Ts);

/// The wall clock, outside the core.
pub fn wall_clock() -> Ts {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ts(now.as_micros().min(i64::MAX as u128) as i64)
}

/// How many log files the tailer keeps open at once. The soft descriptor limit is raised to
/// the hard one first (systemd's soft 1,024 beside a hard 524,288); then half of it, or all
/// but 256 of a large one, go to log files, and the rest stay for the HTTP server's sockets,
/// Parquet files, checkpoints and SMTP. At that budget, rotated files read to their end are
/// closed to make room for the files that wait (helper-42: at `ulimit -n 64` with 81
/// rotations, 34 files could not be opened).
fn log_file_budget() -> usize {
    #[cfg(target_os = "linux")]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write only the struct they are given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return usize::MAX;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        let soft = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
        let budget = (soft / 2).max(soft.saturating_sub(256));
        tracing::debug!(
            descriptors = soft,
            log_files = budget,
            "Log files kept open at most."
        );
        budget
    }
    #[cfg(not(target_os = "linux"))]
    usize::MAX
}

enum Item {
    Record(Box<Record>),
    Error(ParseError, u64),
    Blank,
}

struct Queued {
    item: Item,
    /// Index of the source (and parser) the line came from.
    source: usize,
    time: Option<Ts>,
    number: u64,
    next: u64,
}

/// Lines set aside held one by one between two checkpoints, each with its place and detail;
/// past these, only counted.
const MAX_SET_ASIDE_HELD: usize = 10_000;

/// A line set aside, waiting for the checkpoint past it (see `Pipeline::set_aside`).
struct SetAside {
    source: usize,
    path: String,
    line: u64,
    offset: u64,
    error: ParseError,
}

/// A queue's place in the merge's heap: a line without a time first (it is taken at once),
/// then the earliest time, then the lowest file.
fn front(line: &Queued, file: u32) -> std::cmp::Reverse<(bool, Ts, u32)> {
    std::cmp::Reverse((line.time.is_some(), line.time.unwrap_or_default(), file))
}

/// Lines parsed and waiting in the merge per file, beyond which the file is not read until
/// they are processed: memory stays bounded however large a backlog (~0.5 KB a line).
const MAX_QUEUED_LINES: usize = 50_000;
/// Lines waiting in the merge in all, beyond which a file is read only for the line the
/// merge waits for: per file alone, a first start with 16 rotations held 16 × 50,000 lines
/// (488 MB; helper-45). As large as one file's, so a backlog in many files holds no more
/// than one in a single file.
const MAX_QUEUED_TOTAL: usize = MAX_QUEUED_LINES;

/// How many parsed lines the merge holds: per file, and in all.
#[derive(Debug, Clone, Copy)]
struct QueueLimits {
    per_file: usize,
    total: usize,
}

/// The daemon's pipeline.
pub struct Pipeline {
    config: Config,
    parsers: Vec<LineParser>,
    /// Whether each source maps a correlation ID, and how it reads actions (kept in
    /// checkpoints).
    cid_mapped: Vec<bool>,
    readings: Vec<crate::parse::Reading>,
    engine: Engine,
    tailer: Tailer,
    audit: AuditWriter,
    queues: BTreeMap<u32, VecDeque<Queued>>,
    queue_limits: QueueLimits,
    /// The most lines the merge has held after a read.
    queued_peak: usize,
    /// Files the merge waits for: it took every line queued, and they have more.
    drained: BTreeSet<u32>,
    stats: IngestStats,
    status: Arc<Mutex<LiveStatus>>,
    live: LiveStatus,
    lateness_micros: i64,
    last_checkpoint: Instant,
    /// When the published views (the status behind the API, the overdue and open leaver lists)
    /// were last rebuilt, and whether this pass rebuilds them: see [`VIEW_INTERVAL`].
    last_view: Option<Instant>,
    views_due: bool,
    /// Whether the last pass read every open file to its end, or read and merged nothing:
    /// the next waits for the poll interval or a wake-up (files waiting for a slot or not,
    /// lines queued or not).
    read_all: bool,
    /// Overdue high-risk leavers as of the last view, in listing order: the leaver alert
    /// conditions of every pass in between (a deadline is minutes; a view is 100 ms old).
    overdue_high_risk: Vec<crate::judge::Episode>,
    /// The open episodes past their deadline, already logged and with their `leavers` row
    /// (state `open`) written: (app, user, initiated_at). Checkpointed with the rows, so each
    /// is logged and written once, across restarts too; an episode leaves the set when it is
    /// no longer open.
    breach_rows: BTreeSet<BreachKey>,
    /// Episodes that passed their deadline since the last pass, for their `open` row.
    new_breaches: Vec<crate::judge::Episode>,
    metrics: Arc<Metrics>,
    recent: Arc<Mutex<RecentOperations>>,
    alerts: crate::alert::AlertEngine,
    /// Delivers what the alert engine notifies (None: log only).
    notifier: Option<crate::notify::Notifier>,
    evidence: crate::alert::Evidence,
    windows: crate::slo::Windows,
    /// Newest event time per source (by parser index), synced to stats and metrics per pass.
    last_event: Vec<Option<Ts>>,
    /// Since when each source (by parser index) has been watched, kept across restarts: a
    /// source with no line yet is silent since then.
    watched_since: Vec<Ts>,
    /// Each source's SourceStale threshold in seconds (by parser index; 0: never), from the
    /// config.
    stale_after: Vec<u64>,
    /// Joins and episodes evicted since the last "Memory cap reached" warning, and when that was.
    unwarned_evictions: (u64, u64),
    last_eviction_warning: Option<Instant>,
    /// How long the last checkpoint took: checkpoints are spaced to at least ten times that,
    /// so a large pending state costs at most a tenth of the pipeline's time.
    last_checkpoint_cost: Duration,
    /// Lines set aside since the last checkpoint: said, counted and sampled once it is
    /// written. Said as they were read, a line set aside after the checkpoint a crash goes
    /// back to was read, said and counted again by the next process (QA helper-57: one bad
    /// line, two warnings, 2 in `increase(scimwatch_parse_errors_total)`).
    set_aside: Vec<SetAside>,
    /// Past [`MAX_SET_ASIDE_HELD`] of them (a backlog of nothing but bad lines), only how
    /// many per source and reason: memory stays bounded (helper-58).
    set_aside_more: BTreeMap<(usize, crate::parse::Reason), u64>,
    /// How many of its Parquet files the daemon has committed to the store (counted at start,
    /// then kept), for the checkpoint to say (see [`checkpoint::older_than_store`]).
    store_files: u64,
    /// The newest of them ([`checkpoint::file_order`]).
    store_newest: Option<(u64, u64)>,
}

impl Pipeline {
    /// Opens the store, rolls a half-finished checkpoint forward and restores the engine.
    pub fn open(
        config: Config,
        status: Arc<Mutex<LiveStatus>>,
        metrics: Arc<Metrics>,
        recent: Arc<Mutex<RecentOperations>>,
        mut notifier: Option<crate::notify::Notifier>,
    ) -> anyhow::Result<Pipeline> {
        let data_dir = config.storage.data_dir.clone();
        crate::durable::create_dir_all(&data_dir)
            .with_context(|| format!("creating storage.data_dir {}", data_dir.display()))?;
        let saved = checkpoint::load(&data_dir)?;
        let settings = EngineSettings::from_config(&config);
        let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
        let mut store_files = 0;
        let mut store_newest = None;
        let mut watched_since = BTreeMap::new();
        // Open episodes that app names now merged ended (`[apps] aliases` changed).
        let mut merged_ended = Vec::new();
        let parsers = (config.sources.iter().enumerate())
            .map(|(i, source)| LineParser::new(source, &config.apps, i as u16))
            .collect::<Result<Vec<_>, _>>()?;
        let cid_mapped: Vec<bool> = (parsers.iter())
            .map(|p| p.maps(crate::parse::Field::CorrelationId))
            .collect();
        let readings: Vec<crate::parse::Reading> =
            parsers.iter().map(LineParser::reading).collect();
        let (engine, positions, windows, evidence, last_events, breach_rows) = match saved {
            Some(mut saved) => {
                if let Some(why) = checkpoint::moved_sources(&saved.sources, &names) {
                    anyhow::bail!("{}: {why}", checkpoint::path(&data_dir).display());
                }
                // What was read under a source is credited to the source at its place now.
                for (place, was) in saved.sources.iter().enumerate() {
                    match names.get(place) {
                        Some(now) if now != was => tracing::info!(
                            source = place + 1,
                            %was,
                            %now,
                            "A source was renamed in place: what was read from it and is still pending is credited to the new name (if it is another source, not a rename, what the old one had pending is judged as the new one's: put the old one back until it settles)."
                        ),
                        Some(_) => {}
                        None => tracing::warn!(
                            source = place + 1,
                            %was,
                            "A source was taken out of the config: what was read from it and is still pending is judged without a source's name."
                        ),
                    }
                }
                // Files written for the last checkpoint but perhaps not yet renamed.
                commit_prepared(&saved.pending_files)?;
                let prefix = format!("{}-", checkpoint::FILE_PREFIX);
                let mut files = crate::audit::export::stored_files(&data_dir)?;
                files.retain(|f| {
                    let name = f.file_name().unwrap_or_default().to_string_lossy();
                    name.starts_with(&prefix)
                });
                if let Some(known) = saved.store_files {
                    if let Some(why) =
                        checkpoint::older_than_store(known, saved.store_newest, &files)
                    {
                        anyhow::bail!("{}: {why}", checkpoint::path(&data_dir).display());
                    }
                    if (files.len() as u64) < known {
                        tracing::warn!(
                            missing = known - files.len() as u64,
                            "Parquet files the checkpoint counted are no longer in the store \
                             (moved or deleted by hand?); carrying on."
                        );
                    }
                }
                store_files = files.len() as u64;
                store_newest = files.iter().map(|f| checkpoint::file_order(f)).max();
                watched_since = saved.watched_since;
                // Names read under aliases since changed are given the config's now.
                let rename = config.apps.renamer();
                let renamed = saved.engine.rename_apps(&rename, &mut merged_ended)
                    + saved.evidence.rename_apps(&rename);
                // Ended under the policy now, as the open ones are decided again at restore
                // (QA helper-70: one ended by the merge kept the old name's standard
                // deadline, and a high-risk breach was missing from the store and packs).
                let policy = crate::judge::Policy::from_config(&config.slo);
                for episode in &mut merged_ended {
                    if let Some(decided_on) = &episode.decided_on {
                        (episode.high_risk, episode.deadline_seconds) =
                            policy.decide(decided_on.subject());
                    }
                }
                if renamed > 0 {
                    tracing::info!(
                        renamed,
                        "Apps in the pending state renamed by the changed [apps] aliases."
                    );
                }
                for app in &mut saved.apps {
                    crate::model::rename_app(app, &rename);
                    metrics.claim_app(app);
                }
                // Pending IdP records under the stages their sources give their actions now;
                // only for sources whose stages changed (review helper-71: read again with
                // the config unchanged, an operation of mixed actions was dropped).
                let changed: Vec<Option<(&crate::parse::Reading, &crate::parse::Reading)>> =
                    (readings.iter().enumerate())
                        .map(|(place, now)| {
                            let before = saved.readings.get(place)?;
                            (before != now).then_some((before, now))
                        })
                        .collect();
                let classify = |source: u16, action: &str| {
                    let (before, now) = changed.get(usize::from(source))?.as_ref()?;
                    let read = (before.classify(action), now.classify(action));
                    (read.0 != read.1).then_some(read)
                };
                let (restaged, dropped, as_read) = saved.engine.restage(&classify);
                if restaged > 0 {
                    tracing::info!(
                        restaged,
                        "Pending records given the reading the changed [source.stages] give them (a stage, a trigger or a return)."
                    );
                }
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "Pending records the changed [source.stages] no longer make an operation of their stage or a trigger were dropped, as a replay with the new config reads their lines (a joiner or leaver operation made a mover, a note or nothing; a trigger made an operation, whose line's other fields are gone)."
                    );
                }
                if as_read > 0 {
                    tracing::warn!(
                        operations = as_read,
                        "Joined operations waiting on the leaver timeline have an action the changed [source.stages] read otherwise: they are judged as read (their rows are written already), so an episode they open or close follows the old stages, and so do leaver episodes already open. Let what is pending settle before changing stages, or replay the logs."
                    );
                }
                // A source whose correlation_id mapping was taken out: its pending records
                // lose the IDs, as the config now reads them.
                let maps_cid = |source: u16| *cid_mapped.get(usize::from(source)).unwrap_or(&true);
                let forgotten = saved.engine.forget_cids(&maps_cid);
                if forgotten > 0 {
                    tracing::info!(
                        records = forgotten,
                        "Pending records of sources whose correlation_id mapping was taken out lose their IDs, as the config now reads them, and are filed again."
                    );
                }
                let flipped = saved.engine.gateway_cid_joins() != settings.gateway_cid_joins;
                if flipped {
                    tracing::info!(
                        now = settings.gateway_cid_joins,
                        "Whether gateway correlation IDs join changed (an idp source's correlation_id mapping added or taken out): what is pending is filed again as the config now files it."
                    );
                }
                // Sources that map an ID since (by the checkpoint's record of which did; for
                // an older checkpoint, IDs joining since): their records read before have none.
                let mapped_since = |source: u16| {
                    let now = maps_cid(source);
                    match saved.cid_mapped.get(usize::from(source)) {
                        Some(before) => now && !before,
                        None => now && flipped && saved.cid_mapped.is_empty(),
                    }
                };
                let without = saved.engine.idp_without_cid(&mapped_since);
                if without > 0 {
                    tracing::warn!(
                        records = without,
                        "IdP records read before their source's correlation_id mapping was added have no ID, and the gateway's writes with one join only by it: those operations will be unconfirmed and their writes unattributed, where a replay with the new config joins them. Let what is pending settle before adding the mapping, or replay the logs."
                    );
                }
                tracing::info!(files = saved.files.len(), written_at = %saved.written_at, "Resuming from checkpoint.");
                let mut engine = Engine::restore(saved.engine, settings);
                let mut breach_rows: BTreeSet<BreachKey> = (saved.breach_rows.into_iter())
                    .map(|(mut app, user, at)| {
                        crate::model::rename_app(&mut app, &rename);
                        (app, user, at)
                    })
                    .collect();
                // One decided otherwise (the high-risk policy changed) gets a row of its own
                // once overdue: its `open` row holds the old decision.
                let redecided = engine.take_redecided();
                if !redecided.is_empty() {
                    tracing::info!(
                        count = redecided.len(),
                        "Open leavers judged by the changed high-risk policy (their risk or deadline differs from before the restart)."
                    );
                }
                for key in redecided {
                    breach_rows.remove(&key);
                }
                // One written overdue gets the row that ends it (disabled at the other name's
                // closure, or cancelled): its `open` row stood in the store and in packs as a
                // leaver still not disabled (QA helper-64). One disabled gets it anyway: the
                // other name's disable has a row of its own, begun at that disable, and the
                // leaver's clock started at this one (a pack keeps the one begun first of
                // the two). One cancelled and never written needs none.
                merged_ended.retain(|episode: &crate::judge::Episode| {
                    let key = (
                        episode.app.clone(),
                        episode.alert_user().to_string(),
                        episode.initiated_at,
                    );
                    breach_rows.remove(&key)
                        || episode.state == crate::judge::EpisodeState::Disabled
                });
                (
                    engine,
                    saved.files,
                    saved.windows,
                    saved.evidence,
                    saved.last_events,
                    breach_rows,
                )
            }
            None => {
                // No checkpoint, yet rows in the store: every log would be read from its start
                // again and every row written twice, silently (a deleted or lost checkpoint).
                let stored = crate::audit::export::stored_files(&data_dir)?.len();
                if stored > 0 {
                    anyhow::bail!(
                        "{} holds {stored} Parquet file(s) but no checkpoint \
                         (state/checkpoint.json): starting afresh would read every log from \
                         its start and write every row again. Restore the checkpoint, or move \
                         the store aside (its {}) to start over",
                        data_dir.display(),
                        crate::audit::schema::Table::store_dirs()
                    );
                }
                // Also what a changed `storage.data_dir` looks like: the checkpoint, alert
                // state and outbox of the runs before are in the old one (QA helper-59).
                tracing::warn!(data_dir = %data_dir.display(), "No checkpoint: a first start, reading every file from its start. If this daemon ran before with another storage.data_dir, stop it and put that back: its checkpoint, firing alerts and undelivered pages are there.");
                (
                    Engine::new(settings),
                    Vec::new(),
                    crate::slo::Windows::default(),
                    crate::alert::Evidence::default(),
                    BTreeMap::new(),
                    BTreeSet::new(),
                )
            }
        };
        // A spelling taken out of the aliases: what was read under it keeps the app's name.
        let before = checkpoint::load_aliases(&data_dir).unwrap_or_else(|error| {
            tracing::warn!(error = %format!("{error:#}"), "Cannot read the aliases of the last start: an alias taken out since is not warned of.");
            None
        });
        if let Some(before) = before {
            // Taken out, or moved to another app (helper-65).
            let lost = config.apps.lost_since(&before);
            if !lost.is_empty() {
                tracing::warn!(spellings = %lost.join(", "), "[apps] aliases no longer give these spellings the name they gave: what was read under them before this start keeps that name (the spelling as read is not kept), so a leaver open there is not closed by a disable under the spelling. Put them back, or let what is open settle first.");
            }
        }
        let mut alerts = checkpoint::load_alerts(&data_dir)?;
        // Under their apps' names now (`[apps] aliases` changed), notified under the keys
        // they were; one merged into another's is resolved for those who heard it.
        let merged_away = alerts.rename_apps(&config.apps.renamer());
        for resolve in &merged_away {
            tracing::info!(key = %resolve.dedup_key, "Alert resolved: its app is now another's alias, and the alert goes on under that app's.");
            if let Some(notifier) = notifier.as_mut() {
                notifier.submit(resolve);
            }
        }
        let source_names = names.clone();
        let stale_after: Vec<u64> = config
            .sources
            .iter()
            .map(|s| s.stale_after(config.alerting.stale_after_secs))
            .collect();
        let prefix = format!(
            "{}-{}-{}",
            checkpoint::FILE_PREFIX,
            wall_clock().0,
            std::process::id()
        );
        let audit = AuditWriter::open(
            &data_dir,
            config.pipeline.parquet_rows_per_file,
            names,
            prefix,
        )?;
        let mut sources = Vec::new();
        let mut stats = IngestStats::default();
        for source in &config.sources {
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
        )
        .with_max_open(log_file_budget());
        let lateness_micros =
            (config.slo.allowed_lateness_secs as i64).saturating_mul(MICROS_PER_SEC);
        // Where the windows ended at the checkpoint: what is judged in the first pass is
        // counted from there, as in a run that did not stop (helper-47).
        let mut engine = engine;
        let live = LiveStatus {
            judged_until: Some(engine.episodes_final_before()),
            ..LiveStatus::default()
        };
        // Once the start cannot fail any more: a failed one must leave the aliases the state
        // was read under, so the next start still warns of one taken out (helper-65).
        checkpoint::store_aliases(&data_dir, &config.apps)?;
        Ok(Pipeline {
            config,
            parsers,
            cid_mapped,
            readings,
            engine,
            tailer,
            audit,
            queues: BTreeMap::new(),
            queue_limits: QueueLimits {
                per_file: MAX_QUEUED_LINES,
                total: MAX_QUEUED_TOTAL,
            },
            queued_peak: 0,
            drained: BTreeSet::new(),
            read_all: false,
            stats,
            status,
            live,
            lateness_micros,
            last_checkpoint: Instant::now(),
            last_view: None,
            views_due: true,
            overdue_high_risk: Vec::new(),
            breach_rows,
            new_breaches: merged_ended,
            last_checkpoint_cost: Duration::ZERO,
            set_aside: Vec::new(),
            set_aside_more: BTreeMap::new(),
            store_files,
            store_newest,
            metrics,
            recent,
            alerts,
            notifier,
            evidence,
            last_event: last_events_by_index(&source_names, &last_events),
            watched_since: source_names
                .iter()
                .map(|n| watched_since.get(n).copied().unwrap_or_else(wall_clock))
                .collect(),
            stale_after,
            unwarned_evictions: (0, 0),
            last_eviction_warning: None,
            windows,
        })
    }

    /// Directories to watch for wake-ups.
    pub fn watch_dirs(&self) -> Vec<std::path::PathBuf> {
        self.tailer.watch_dirs()
    }

    /// Whether a file event is worth a wake-up: a write, a new, renamed or removed file — not
    /// an open or a read. The tailer opens every file it follows on every pass (to hash its
    /// head); woken by its own opens, the daemon polled without pause and burned more than a
    /// core while idle.
    pub fn wakes(event: &notify::Event) -> bool {
        !matches!(event.kind, notify::EventKind::Access(_))
    }

    /// Runs until `Shutdown` (or the control channel closes).
    pub fn run(mut self, control: Receiver<Control>) -> anyhow::Result<()> {
        let poll = Duration::from_millis(self.config.pipeline.poll_interval_ms);
        loop {
            self.step(wall_clock())?;
            self.live.ready = true;
            if self.views_due {
                self.publish();
                self.last_view = Some(Instant::now());
            }
            // With a backlog, go straight on; caught up, wait for the next tick or a wake-up.
            let wait = if self.read_all { poll } else { Duration::ZERO };
            match control.recv_timeout(wait) {
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
        if let Some(notifier) = self.notifier.take() {
            notifier.finish();
        }
        self.publish();
        tracing::info!("Stopped: rows committed and checkpoint written.");
        Ok(())
    }

    /// Writes the alert state; with a notifier, on its outbox writer after the deliveries
    /// handed to it (a crash in between may page twice, never not at all), so that a page
    /// storm's synced files hold up the pipeline only at a checkpoint.
    fn store_alerts(&mut self) -> anyhow::Result<()> {
        let data_dir = &self.config.storage.data_dir;
        let Some(notifier) = &mut self.notifier else {
            return checkpoint::store_alerts(data_dir, &self.alerts);
        };
        // Who heard each alert first: a crash between the two leaves an alert the alert state
        // does not know as firing (pruned at the next store), never one firing that nobody
        // is known to have heard.
        notifier.store_heard(self.alerts.notified_keys());
        let bytes = serde_json::to_vec(&self.alerts)?;
        let data_dir = data_dir.clone();
        notifier.after_deliveries(move || {
            if let Err(error) = checkpoint::store_alert_bytes(&data_dir, &bytes) {
                tracing::error!(error = %format!("{error:#}"), "Cannot persist the alert state.");
            }
        });
        Ok(())
    }

    /// One pass: read, merge, judge, write, and checkpoint when due.
    pub fn step(&mut self, wall: Ts) -> anyhow::Result<()> {
        let parsers = &self.parsers;
        // A file whose queue is full is not read this pass: while one source's earlier events
        // hold back the merge, the other's whole backlog was parsed and held in memory (a
        // 510 MB gateway log behind an IdP backlog: 810 MB; helper-42's review). Past the
        // total (counted as lines are read), a file the merge drained is read on for its
        // budget, since the merge waits for it; any other gives one line, so the merge knows
        // where it stands: read for a budget each (~4,000 lines), files read at once (a first
        // start over rotated files) grew the peak with their number.
        let before: BTreeMap<u32, usize> = (self.queues.iter())
            .map(|(id, queue)| (*id, queue.len()))
            .collect();
        let queued_before: usize = before.values().sum();
        let total = std::cell::Cell::new(queued_before);
        let limits = self.queue_limits;
        let held = |id: u32| {
            let queued = before.get(&id).copied().unwrap_or(0);
            queued >= limits.per_file || (total.get() >= limits.total && queued > 0)
        };
        let queues = &mut self.queues;
        let drained = &self.drained;
        let mut lines_read = vec![0u64; parsers.len()];
        let turned_before = {
            let counters = self.tailer.counters();
            counters.files_opened + counters.files_closed
        };
        self.tailer
            .poll_holding(&held, &mut |source, line| {
                let parser = &parsers[source.source];
                // Blank lines are neither records nor errors, and not lines read (as in
                // `replay`, whose report must be the same).
                if !matches!(&line, Line::Text { bytes, .. } if bytes.iter().all(u8::is_ascii_whitespace))
                {
                    lines_read[source.source] += 1;
                }
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
                        source: source.source,
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
                                source: source.source,
                            }
                        } else {
                            match parser.parse(bytes, source.file_id, number) {
                                Ok(record) => Queued {
                                    time: Some(record.time()),
                                    item: Item::Record(Box::new(record)),
                                    number,
                                    next,
                                    source: source.source,
                                },
                                Err(error) => Queued {
                                    item: Item::Error(error, offset),
                                    time: None,
                                    number,
                                    next,
                                    source: source.source,
                                },
                            }
                        }
                    }
                };
                let queue = queues.entry(source.file_id).or_default();
                queue.push_back(queued);
                total.set(total.get() + 1);
                queue.len() < limits.per_file
                    && (total.get() < limits.total || drained.contains(&source.file_id))
            })
            .context("reading log files")?;
        let queued_read = total.get();
        self.queued_peak = self.queued_peak.max(queued_read);
        for (index, count) in lines_read.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            let name = &self.parsers[index].name;
            self.stats.source_mut(name).lines += count;
            self.metrics
                .lines
                .get_or_create(&m::SourceLabels {
                    source: name.clone(),
                })
                .inc_by(count);
        }
        // The files with bytes still unread, as this pass's reading left them (the merge
        // reads nothing): for the merge and for the drained files below.
        let unread = self.tailer.unread();
        self.merge(wall, &unread);
        // Queues of files closed since go, and an emptied queue gives back what a backlog
        // made it hold.
        let tailer = &self.tailer;
        self.queues.retain(|id, queue| {
            if queue.is_empty() && queue.capacity() > 4096 {
                queue.shrink_to(1024);
            }
            !queue.is_empty() || tailer.path_of(*id).is_some()
        });
        self.drained = (self.queues.iter())
            .filter(|(id, queue)| queue.is_empty() && unread.contains(id))
            .map(|(id, _)| *id)
            .collect();
        let queued_after = self.queues.values().map(VecDeque::len).sum::<usize>();
        // (Caught up, not only read to the end: files may wait for a descriptor.)
        let caught_up = self.tailer.caught_up() && queued_after == 0;
        // The next pass waits for the poll interval (or a wake-up) once this one read every
        // file to its end, or read and merged nothing: lines still queued wait for a file
        // not read yet or for a source whose files wait for a slot, and the files not read
        // are full. Passing at once then burned a core: while a file was being closed
        // (helper-48), while the merge waited with every queue full (helper-49).
        let stuck = queued_read == queued_before && queued_after == queued_read;
        // Nor while files wait for a slot and this pass opened or closed some: the next
        // closes those read, or opens more in the slots freed (a poll interval a batch made
        // a first start over 1,500 rotations in 32 slots take 64 s; 28 s once rotations
        // written long ago were closed as soon as read).
        let counters = self.tailer.counters();
        let turned = counters.files_opened + counters.files_closed;
        let turning = counters.files_waiting > 0 && turned > turned_before;
        self.read_all = !turning && (self.tailer.read_to_end() || stuck);
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
        // The engine's clock is a watermark it settles a window plus the allowed lateness
        // behind. Caught up, that is the wall clock itself (a line arriving now is at most the
        // allowed lateness late); passing `effective` (already the wall clock less the
        // lateness) took the lateness off twice, and joins settled a lateness late.
        self.engine
            .advance(if caught_up { wall } else { wall.min(effective) });
        let evictions = self.engine.enforce_caps(&self.config.pipeline);
        self.live.evicted_joins += evictions.joins;
        self.live.evicted_episodes += evictions.episodes;
        self.live.forgotten_names += evictions.names;
        for (kind, count) in [
            ("joins", evictions.joins),
            ("episodes", evictions.episodes),
            ("names", evictions.names),
        ] {
            if count > 0 {
                self.metrics
                    .evictions
                    .get_or_create(&m::EvictionLabels { kind: kind.into() })
                    .inc_by(count);
            }
        }
        // Once a minute at most, with the totals since: at a cap every pass evicts, and a
        // warning a pass was thousands of lines a minute.
        self.unwarned_evictions.0 += evictions.joins;
        self.unwarned_evictions.1 += evictions.episodes;
        let (joins, episodes) = self.unwarned_evictions;
        if joins + episodes > 0
            && self
                .last_eviction_warning
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                joins,
                episodes,
                "Memory cap reached: oldest pending state settled early (counts since the last such warning; scimwatch_evictions_total counts all)."
            );
            self.unwarned_evictions = (0, 0);
            self.last_eviction_warning = Some(Instant::now());
        }
        if evictions.names > 0 {
            tracing::debug!(
                forgotten = evictions.names,
                "Name cap reached: the oldest learned userNames forgotten."
            );
        }
        let outputs: Vec<Output> = self.engine.drain().collect();
        let mut recent = Vec::new();
        for output in outputs {
            self.audit.add(&output, wall, clock)?;
            self.count(&output);
            // Moved, not copied, into what the API can look up.
            if let Output::Operation(op) = output {
                if op.correlation_id.is_some() {
                    recent.push(Arc::from(op));
                }
            }
        }
        if !recent.is_empty() {
            if let Ok(mut lookup) = self.recent.lock() {
                for op in recent {
                    lookup.insert(op);
                }
            }
        }
        self.live.clock = Some(clock);
        self.live.judged_until = Some(self.engine.episodes_final_before());
        self.live.watermark = watermark;
        self.live.caught_up = caught_up;
        self.live.join_pending = self.engine.join_pending();
        self.live.known_names = self.engine.known_names();
        self.live.leavers_open = self.engine.open_episode_count();
        // Passes come back to back under load (a backlog, or a wake-up per append), and
        // rebuilding and copying the views every pass was most of the daemon's time.
        self.views_due = self
            .last_view
            .is_none_or(|at| at.elapsed() >= VIEW_INTERVAL);
        self.refresh_gauges(clock);
        // An episode still open past its deadline is a breach now, whenever it is disabled:
        // its row goes to the `leavers` table with this pass's rows.
        for episode in std::mem::take(&mut self.new_breaches) {
            self.audit.add(&Output::Episode(episode), wall, clock)?;
        }
        let interval = Duration::from_secs(self.config.pipeline.checkpoint_interval_secs)
            .max(self.last_checkpoint_cost * 10);
        if self.audit.needs_flush() || self.last_checkpoint.elapsed() >= interval {
            self.checkpoint(wall)?;
        }
        Ok(())
    }

    /// Processes queued lines in time order across files, never past a file that still has
    /// unread bytes and nothing queued (its next line may be earlier).
    fn merge(&mut self, wall: Ts, unread: &std::collections::HashSet<u32>) {
        // Sources with files waiting for a slot (at the limit of open files): the merge waits
        // for them once none of their lines is queued, as for a file with unread bytes (it
        // went on without them, and their lines came too late to join: helper-47).
        let waiting: Vec<usize> = (0..self.parsers.len())
            .filter(|s| self.tailer.waiting(*s))
            .collect();
        // Kept as lines are taken, not looked for again at each: with thousands of files
        // open, that looked through every queue and, for each empty one, every file, a line
        // at a time (a first start over 3,107 rotations took 21 s of CPU: helper-53).
        let mut queued_by_source = vec![0usize; self.parsers.len()];
        let mut drained_unread = false;
        // The queues' fronts, earliest first: a line without a time before any with one, then
        // by time, then by file (the order the queues were scanned in when this was a scan
        // through every queue a line, linear in the open files: helper-53).
        let mut fronts = std::collections::BinaryHeap::with_capacity(self.queues.len());
        for (id, queue) in &self.queues {
            match queue.front() {
                Some(line) => {
                    queued_by_source[line.source] += 1;
                    fronts.push(front(line, *id));
                }
                None => drained_unread |= unread.contains(id),
            }
        }
        while let Some(&std::cmp::Reverse((timed, _, file))) = fronts.peek() {
            let blocked = drained_unread || waiting.iter().any(|s| queued_by_source[*s] == 0);
            if timed && blocked {
                return;
            }
            fronts.pop();
            let Some(queue) = self.queues.get_mut(&file) else {
                return;
            };
            let Some(queued) = queue.pop_front() else {
                return;
            };
            match queue.front() {
                Some(line) => fronts.push(front(line, file)),
                None => {
                    queued_by_source[queued.source] -= 1;
                    drained_unread |= unread.contains(&file);
                }
            }
            match queued.item {
                Item::Record(record) => {
                    // Per record only a max; stats and the gauge are synced once per pass.
                    let time = record.time();
                    let last = &mut self.last_event[queued.source];
                    *last = Some(last.map_or(time, |t| t.max(time)));
                    if let Record::Idp(idp) = record.as_ref() {
                        if let Some(app) = idp.app.as_deref().filter(|a| !a.is_empty()) {
                            self.metrics.claim_app(app);
                        }
                    }
                    self.engine.ingest(*record);
                    // While the clock follows the watermark (a backlog), it does so record
                    // by record, as in `replay`: moved once a pass, a line more than a join
                    // window late still found its operation open when its pass read it with
                    // the lines before it (joined by `run`, unconfirmed and unattributed by
                    // `replay`: QA helper-54). Never past the wall clock (a line from the
                    // future). Once the clock is past the watermark (caught up, it is the
                    // wall clock), a pass's late lines settle together at its end, as before:
                    // settled one by one, a burst of old lines appended to a caught-up
                    // daemon's logs joined nothing.
                    if let Some(watermark) = self.engine.watermark() {
                        if watermark.min(wall) >= self.engine.clock() {
                            self.engine.advance(watermark.min(wall));
                        }
                    }
                }
                Item::Error(error, offset) => {
                    let path = self
                        .tailer
                        .path_of(file)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    if self.set_aside.len() < MAX_SET_ASIDE_HELD {
                        self.set_aside.push(SetAside {
                            source: queued.source,
                            path,
                            line: queued.number,
                            offset,
                            error,
                        });
                    } else {
                        *(self.set_aside_more)
                            .entry((queued.source, error.reason))
                            .or_default() += 1;
                    }
                }
                Item::Blank => {}
            }
            self.tailer.mark_consumed(file, queued.next, queued.number);
        }
    }

    /// Commits buffered rows and advances the checkpoint, exactly once (see `checkpoint`).
    fn checkpoint(&mut self, wall: Ts) -> anyhow::Result<()> {
        let started = Instant::now();
        let prepared = self.audit.prepare()?;
        // What the store holds once these are committed (the checkpoint says so first).
        let store_files = self.store_files + prepared.len() as u64;
        let store_newest = prepared
            .iter()
            .map(|f| checkpoint::file_order(&f.path))
            .chain(self.store_newest)
            .max();
        // Every notification of what this checkpoint moves past is on disk before it: a page
        // still waiting for the outbox writer when the process dies would otherwise be lost
        // with its cause behind the checkpoint (QA helper-18). Checkpoints are seconds apart.
        if let Some(notifier) = &self.notifier {
            notifier.flush();
        }
        let saved = checkpoint::CheckpointRef {
            version: checkpoint::CHECKPOINT_VERSION,
            written_at: wall,
            files: self.tailer.positions(),
            engine: self.engine.snapshot(),
            pending_files: &prepared,
            windows: &self.windows,
            evidence: &self.evidence,
            breach_rows: &self.breach_rows,
            sources: self.parsers.iter().map(|p| p.name.as_str()).collect(),
            store_files: Some(store_files),
            store_newest,
            watched_since: self
                .parsers
                .iter()
                .zip(&self.watched_since)
                .map(|(p, since)| (p.name.as_str(), *since))
                .collect(),
            apps: self.metrics.labelled_apps(),
            cid_mapped: &self.cid_mapped,
            readings: &self.readings,
            last_events: self
                .parsers
                .iter()
                .zip(&self.last_event)
                .filter_map(|(p, t)| t.map(|t| (p.name.as_str(), t)))
                .collect(),
        };
        checkpoint::store(&self.config.storage.data_dir, &saved)?;
        commit_prepared(&prepared)?;
        let count_metric = |metrics: &Metrics, source: &str, reason: &str, count: u64| {
            let labels = m::ParseErrorLabels {
                source: source.to_string(),
                reason: reason.into(),
            };
            metrics.parse_errors.get_or_create(&labels).inc_by(count);
        };
        for line in std::mem::take(&mut self.set_aside) {
            let source = self.parsers[line.source].name.as_str();
            let (error, reason) = (&line.error, line.error.reason.as_str());
            tracing::warn!(source, file = %line.path, line = line.line, offset = line.offset, reason, error = %error.detail, "Line set aside.");
            count_metric(&self.metrics, source, reason, 1);
            self.stats
                .error_in(source, line.path, line.line, line.offset, error);
        }
        for ((source, reason), count) in std::mem::take(&mut self.set_aside_more) {
            let source = self.parsers[source].name.as_str();
            tracing::warn!(
                source,
                reason = reason.as_str(),
                count,
                "More lines set aside than are said one by one between two checkpoints: counted."
            );
            count_metric(&self.metrics, source, reason.as_str(), count);
            *(self.stats.source_mut(source).errors)
                .entry(reason)
                .or_default() += count;
        }
        (self.store_files, self.store_newest) = (store_files, store_newest);
        self.store_alerts()?;
        self.last_checkpoint = Instant::now();
        self.last_checkpoint_cost = started.elapsed();
        self.live.checkpoints += 1;
        self.live.last_checkpoint = Some(wall);
        for table in Table::ALL {
            let written = self.audit.rows_written(table);
            let before = self.live.parquet_rows.insert(table.name(), written);
            self.metrics
                .parquet_rows
                .get_or_create(&m::TableLabels {
                    table: table.name().into(),
                })
                .inc_by(written.saturating_sub(before.unwrap_or(0)));
        }
        Ok(())
    }

    fn count(&mut self, output: &Output) {
        match output {
            Output::Operation(op) => {
                // A write no IdP record claims may name any app (a client's `Host` header):
                // it must not take one of the bounded label slots from the real ones.
                let app = if op.outcome == crate::model::Outcome::Unattributed {
                    self.metrics.unclaimed_app_label(op.app.as_deref())
                } else {
                    self.metrics.app_label(op.app.as_deref())
                };
                let (outcome, cause) = m::outcome_labels(op.outcome, op.alert_cause());
                self.metrics
                    .operations
                    .get_or_create(&m::OperationLabels {
                        stage: op.stage.as_str().into(),
                        app: app.clone(),
                        outcome: outcome.into(),
                        cause: cause.into(),
                    })
                    .inc();
                self.windows.record(op.stage, op.outcome, op.time);
                // Counted where the windows ended when it was judged, but never later than the
                // longest a write waits in the join (three windows and the lateness): a file
                // of old refusals turning up late was counted now, and paged (helper-47).
                let held =
                    3 * self.config.slo.join_window_secs + self.config.slo.allowed_lateness_secs;
                let judged = (self.live.judged_until).map(|t| t.min(op.time.plus_secs(held)));
                self.evidence.record_operation(op, judged);
                if op.outcome == Outcome::Unattributed {
                    self.metrics
                        .unattributed_writes
                        .get_or_create(&m::AppLabels { app: app.clone() })
                        .inc();
                }
                if op.disagreement {
                    self.metrics
                        .disagreements
                        .get_or_create(&m::AppLabels { app: app.clone() })
                        .inc();
                }
                if let Some(lag) = op.lag_ms {
                    self.metrics
                        .provisioning_lag
                        .get_or_create(&m::AppLabels { app })
                        .observe(lag.max(0) as f64 / 1000.0);
                }
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
                    if let Some(latency) = episode.latency_seconds() {
                        let labels = m::LatencyLabels {
                            app: self.metrics.app_label(Some(&episode.app)),
                            risk: if episode.high_risk {
                                "high"
                            } else {
                                "standard"
                            }
                            .into(),
                        };
                        self.metrics
                            .leaver_disable_latency
                            .get_or_create(&labels)
                            .observe(latency);
                    }
                }
            }
            Output::PostDisable(activity) => {
                self.live.post_disable_requests += 1;
                self.evidence.record_post_disable(activity);
                self.metrics
                    .post_disable_requests
                    .get_or_create(&m::AppLabels {
                        app: self.metrics.app_label(Some(&activity.app)),
                    })
                    .inc();
                tracing::warn!(app = %activity.app, user = %activity.user, time = %activity.time, "Request made as a disabled user.");
            }
        }
    }

    /// Counts, lists and logs the open leavers, and notes the overdue high-risk ones for the
    /// alert conditions. Only when the views are due: walking every open episode on every pass
    /// was most of a busy daemon's time; the gauges keep their values in between.
    fn refresh_leaver_views(&mut self, clock: Ts) {
        // An episode past its deadline is overdue once nothing that could still close it in
        // time is on its way: a disable that succeeded before the deadline reaches the episode
        // only a join window plus the allowed lateness later, and until then it was paged and
        // written as a breach (QA: every high-risk leaver disabled between 4 and 15 minutes
        // in, with the default settings). Before `final_before` the episodes have seen all.
        let final_before = self.engine.episodes_final_before();
        let undecided = undecided_pairs(&self.engine.open_episodes(), clock, final_before);
        let unseen = self.engine.unseen_leavers(&undecided);
        let open = self.engine.open_episodes();
        // Whether an operation on its way may have disabled the user by the deadline.
        let may_still_close = |episode: &crate::judge::Episode| {
            folded_pairs(episode).any(|pair| {
                undecided
                    .binary_search(&pair)
                    .ok()
                    .and_then(|i| unseen[i])
                    .is_some_and(|at| at <= episode.due_at())
            })
        };
        let (mut open_high, mut open_standard, mut overdue_high, mut overdue_standard) =
            (0, 0, 0, 0);
        let (mut oldest_high, mut oldest_standard) = (0.0f64, 0.0f64);
        let mut listed = Vec::new();
        let mut overdue_listed = Vec::new();
        let mut breached = BTreeSet::new();
        self.overdue_high_risk.clear();
        for episode in &open {
            let due = episode.due_at();
            let overdue = due < clock && (due < final_before || !may_still_close(episode));
            match (episode.high_risk, overdue) {
                (true, true) => {
                    overdue_high += 1;
                    self.overdue_high_risk.push((*episode).clone());
                }
                (false, true) => overdue_standard += 1,
                _ => {}
            }
            let age = clock.secs_since(episode.initiated_at).max(0.0);
            if episode.high_risk {
                open_high += 1;
                oldest_high = oldest_high.max(age);
            } else {
                open_standard += 1;
                oldest_standard = oldest_standard.max(age);
            }
            // Every open episode once any breach is written: a written one must be found
            // whether or not it is past its deadline in this view (a restarted daemon working
            // through a backlog sees an earlier event time than the view that wrote it).
            if overdue || !self.breach_rows.is_empty() {
                // Under the name the episode opened with: a login learned later is the same
                // episode (its second `open` row and warning were written under the new name).
                let breach = (
                    episode.app.clone(),
                    episode.alert_user().to_string(),
                    episode.initiated_at,
                );
                let written = self.breach_rows.contains(&breach);
                let (write, keep) = breach_decision(written, overdue);
                if write {
                    tracing::warn!(app = %episode.app, user = %episode.user(), high_risk = episode.high_risk, initiated_at = %episode.initiated_at, due_at = %episode.due_at(), "Leaver overdue: still not disabled.");
                    self.new_breaches.push((*episode).clone());
                }
                if keep {
                    breached.insert(breach);
                }
            }
            if overdue && overdue_listed.len() < MAX_LISTED {
                overdue_listed.push(OverdueLeaver {
                    app: episode.app.clone(),
                    user: episode.user().to_string(),
                    high_risk: episode.high_risk,
                    initiated_at: episode.initiated_at,
                    due_at: episode.due_at(),
                    correlation_ids: episode.correlation_ids.clone(),
                });
            }
            if listed.len() < MAX_LISTED {
                listed.push(OpenLeaver {
                    app: episode.app.clone(),
                    user: episode.user().to_string(),
                    high_risk: episode.high_risk,
                    initiated_at: episode.initiated_at,
                    age_seconds: age,
                    deadline_seconds: episode.deadline_seconds,
                    due_at: episode.due_at(),
                    overdue,
                    correlation_ids: episode.correlation_ids.clone(),
                });
            }
        }
        for (risk, value) in [("high", open_high), ("standard", open_standard)] {
            self.metrics
                .leavers_open
                .get_or_create(&m::RiskLabels { risk: risk.into() })
                .set(value);
        }
        for (risk, value) in [("high", overdue_high), ("standard", overdue_standard)] {
            self.metrics
                .leavers_overdue
                .get_or_create(&m::RiskLabels { risk: risk.into() })
                .set(value);
        }
        for (risk, value) in [("high", oldest_high), ("standard", oldest_standard)] {
            self.metrics
                .leaver_oldest_open_age
                .get_or_create(&m::RiskLabels { risk: risk.into() })
                .set(value);
        }
        self.live.open_leavers = Arc::new(listed);
        self.live.leavers_overdue = Arc::new(overdue_listed);
        self.breach_rows = breached;
    }

    /// Gauges, SLO windows, open leavers and the alert conditions that hold at `clock`.
    fn refresh_gauges(&mut self, clock: Ts) {
        if self.views_due {
            self.refresh_leaver_views(clock);
        }
        for (index, last) in self.last_event.iter().enumerate() {
            let name = &self.parsers[index].name;
            // With no line yet, the gauge holds the start, so the SourceStale rule sees a
            // source that never speaks (a mistyped glob) as well as one that fell silent.
            let last = match *last {
                Some(last) => {
                    self.stats.source_mut(name).last_event = Some(last);
                    last
                }
                None => self.watched_since[index],
            };
            let labels = m::SourceLabels {
                source: name.clone(),
            };
            self.metrics
                .source_last_event
                .get_or_create(&labels)
                .set(last.0 as f64 / 1e6);
            self.metrics
                .source_stale_after
                .get_or_create(&labels)
                .set(self.stale_after[index] as i64);
        }
        let slo = &self.config.slo;
        // The windows end where every operation has been judged ([`Inputs::judged_until`]).
        let judged_until = self.live.judged_until.unwrap_or(clock);
        self.windows.prune(judged_until, slo.evaluation_window_secs);
        self.metrics.join_pending.set(self.live.join_pending as i64);
        let tail = self.tailer.counters();
        for (state, count) in [
            ("open", tail.files_open),
            ("parked", tail.files_parked),
            ("waiting", tail.files_waiting),
        ] {
            (self.metrics.log_files)
                .get_or_create(&m::FileStateLabels { state })
                .set(count as i64);
        }
        let end = crate::slo::WindowEnd {
            judged: judged_until,
            clock,
        };
        for stage in crate::model::Stage::ALL {
            let reports = self.windows.report(stage, end, slo);
            for report in &reports {
                let labels = m::StageWindowLabels {
                    stage: stage.as_str().into(),
                    window: report.window.into(),
                };
                match report.success_ratio {
                    Some(ratio) => {
                        self.metrics
                            .stage_success_ratio
                            .get_or_create(&labels)
                            .set(ratio);
                    }
                    // 0/0 is no data: the series disappears rather than reading 0, 1 or NaN.
                    None => {
                        self.metrics.stage_success_ratio.remove(&labels);
                    }
                }
            }
            let evaluation = self.windows.counts(stage, slo.evaluation_window_secs, end);
            let status =
                crate::report::SloStatus::judge(evaluation.succeeded, evaluation.operations(), slo);
            self.metrics
                .stage_slo_status
                .get_or_create(&m::StageLabels {
                    stage: stage.as_str().into(),
                })
                .set(m::status_value(status));
            self.live.slo.insert(stage.as_str(), reports);
        }
        // The alerts are judged with the views, as Prometheus judges its rules at an interval:
        // one condition per overdue high-risk leaver, built every pass, took a busy daemon
        // with a thousand of them from 335k to 30k lines/s. The overdue leavers change only
        // with the views anyway; the SLO windows and evidence change every pass, so while a
        // backlog is read a condition is judged every 100 ms of wall time (tens of thousands
        // of lines), not every pass, and one shorter than that in event time can be missed.
        if !self.views_due {
            return;
        }
        let alerting = &self.config.alerting;
        let sources: Vec<Freshness> = self
            .parsers
            .iter()
            .zip(self.watched_since.iter().zip(&self.stale_after))
            .map(|(p, (since, &stale_after_secs))| Freshness {
                source: p.name.as_str(),
                last_event: self.stats.sources.get(&p.name).and_then(|s| s.last_event),
                watched_since: *since,
                stale_after_secs,
            })
            .collect();
        let keep = crate::alert::conditions::evidence_horizon_secs(slo, alerting);
        let counts_keep = crate::alert::conditions::counts_horizon_secs(slo, alerting);
        self.evidence.prune(judged_until, keep, counts_keep);
        let conditions = crate::alert::conditions::evaluate(&crate::alert::conditions::Inputs {
            clock,
            judged_until,
            requests_judged_until: judged_until.minus_secs(slo.join_window_secs),
            slo,
            alerting,
            windows: &self.windows,
            evidence: &self.evidence,
            open_episodes: &self.overdue_high_risk.iter().collect::<Vec<_>>(),
            sources,
            caught_up: self.live.caught_up,
            // (The evidence's `unknown` is an operation with no app: its label too.)
            app_label: &|app| match app {
                "unknown" => app.to_string(),
                app => self.metrics.unclaimed_app_label(Some(app)),
            },
        });
        let settings = crate::alert::AlertSettings {
            hold_secs: alerting.hold_secs,
            keep_firing_secs: alerting.keep_firing_secs,
            repeat_interval_secs: alerting.repeat_interval_secs,
        };
        // With a backlog, nothing firing resolves until every file is read: silence cannot be
        // judged (a stale source would resolve and page again), and the clock follows the
        // backlog's events, which may be older than the clock an alert fired at (a batch of
        // old lines, or a restart after downtime): a leaver still overdue was resolved, then
        // paged again (helper-43's review).
        self.alerts.hold_firing(!self.live.caught_up);
        // Shared by the alert engine and the status page, not copied for each.
        let mut conditions: Vec<Arc<crate::alert::Condition>> =
            conditions.into_iter().map(Arc::new).collect();
        let notifications = self
            .alerts
            .evaluate(clock, conditions.iter().cloned(), settings);
        if !self.live.caught_up {
            // (The status lists what is held as holding.)
            let holding: std::collections::HashSet<String> =
                conditions.iter().map(|c| c.dedup_key()).collect();
            let held: Vec<Arc<crate::alert::Condition>> = (self.alerts.firing())
                .filter(|(key, _)| !holding.contains(*key))
                .map(|(_, c)| Arc::new(c.clone()))
                .collect();
            conditions.extend(held);
        }
        for notification in &notifications {
            let condition = &notification.condition;
            if notification.kind == crate::alert::NotificationKind::Resolved {
                tracing::info!(alert = %condition.alert, key = %notification.dedup_key, since = %notification.firing_since, "Alert resolved.");
            } else {
                let repeat = notification.kind == crate::alert::NotificationKind::Repeat;
                tracing::warn!(alert = %condition.alert, severity = %condition.severity, key = %notification.dedup_key, repeat, summary = %condition.summary, "Alert firing.");
            }
            // The outbox file is written before the alert state: a crash in between may page
            // twice, never not at all.
            if let Some(notifier) = self.notifier.as_mut() {
                notifier.submit(notification);
            }
        }
        if !notifications.is_empty() {
            if let Err(error) = self.store_alerts() {
                tracing::error!(error = %format!("{error:#}"), "Cannot persist the alert state.");
            }
        }
        for kind in m::ALERT_KINDS {
            let firing = self
                .alerts
                .firing()
                .filter(|(_, c)| c.alert == kind)
                .count() as i64;
            self.metrics
                .alerts_firing
                .get_or_create(&m::AlertLabels { alert: kind.into() })
                .set(firing);
        }
        self.live.alerts = Arc::new(conditions);
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

/// The (app, user) pairs of the leavers past their deadline but not yet decided (the
/// episodes have not seen everything up to it), folded, sorted, each once: a login equal to
/// the id but for case, or two episodes of apps spelt two ways, fold to one pair (numbered
/// twice, it indexed past the engine's answer and panicked the pipeline: QA helper-18).
/// What a view does with an open episode: write its breach (the `open` row and the warning)
/// when it is overdue and not written before, and keep its key for the next view while it is
/// overdue or was written. A written breach stays written as long as its episode is open,
/// whatever this view makes of it: held (an operation on its way may still close it in time),
/// or not yet due at the earlier event time a restarted daemon's backlog starts from.
/// Forgotten, it was logged and written again when the view came round (QA helper-31: 9,846
/// leaver rows for 3,000 episodes after twelve `kill -9`s during a backlog; each restart wrote
/// every overdue episode's row again).
fn breach_decision(written: bool, overdue: bool) -> (bool, bool) {
    (overdue && !written, overdue || written)
}

fn undecided_pairs(
    open: &[&crate::judge::Episode],
    clock: Ts,
    final_before: Ts,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = open
        .iter()
        .filter(|e| e.due_at() < clock && e.due_at() >= final_before)
        .flat_map(|e| folded_pairs(e))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// A leaver's (app, user) pairs, folded, by the user's login and by id: what the overdue hold
/// asks the engine about.
fn folded_pairs(e: &crate::judge::Episode) -> impl Iterator<Item = (String, String)> + '_ {
    let app = crate::model::fold_case(&e.app).into_owned();
    [e.user_login.as_deref(), e.user_id.as_deref()]
        .into_iter()
        .flatten()
        .map(move |user| (app.clone(), crate::model::fold_case(user).into_owned()))
}

/// Each parser's newest event time from a checkpoint's `last_events`, by source name.
fn last_events_by_index(names: &[String], saved: &BTreeMap<String, Ts>) -> Vec<Option<Ts>> {
    names.iter().map(|n| saved.get(n).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open episode through a backlog's views: overdue, then held or not yet due (a late
    /// operation for it may still close it in time; a restart's backlog starts at an earlier
    /// event time), then overdue again. Its breach is written once; forgetting it in between
    /// wrote it again.
    #[test]
    fn a_breach_held_for_a_while_is_written_once() {
        let mut written = false;
        let mut writes = 0;
        for overdue in [true, true, false, false, true, true] {
            let (write, keep) = breach_decision(written, overdue);
            writes += usize::from(write);
            written = keep;
        }
        assert_eq!(writes, 1);
        // A held episode never written is not written, nor remembered.
        assert_eq!(breach_decision(false, false), (false, false));
    }

    /// Each undecided leaver's pair is asked about once, however it is spelt: a login equal
    /// to the id but for case, and two episodes of an app spelt two ways, fold to one pair.
    /// Numbered twice, a pair indexed past the engine's answer and the pipeline panicked at
    /// the first view with such a leaver overdue, and again after every restart (QA
    /// helper-18). Decided ones (before `final_before`) and ones not yet due are not asked.
    #[test]
    fn undecided_leavers_are_asked_about_once_per_folded_pair() {
        let episode = |app: &str, login: Option<&str>, id: Option<&str>, initiated: i64| {
            crate::judge::Episode {
                app: app.into(),
                user_id: id.map(Into::into),
                user_login: login.map(Into::into),
                initiated_at: Ts::from_secs(initiated),
                first_attempt_at: None,
                disabled_at: None,
                high_risk: true,
                deadline_seconds: 900,
                correlation_ids: vec![],
                state: crate::judge::EpisodeState::Open,
                initiated_by: "deactivate".into(),
                known_as: String::new(),
                by_source: false,
                started_by: Some(crate::judge::ClockStart::Operation),
                disabled_by: None,
                decided_on: None,
            }
        };
        let open = [
            episode(
                "Wiki",
                Some("Alice@corp.example"),
                Some("alice@corp.example"),
                0,
            ),
            episode("wiki", Some("alice@corp.example"), None, 10),
            episode("crm", None, Some("u-7"), 20),
            episode("crm", Some("decided@corp.example"), None, -5_000),
            episode("crm", Some("not-due@corp.example"), None, 900),
        ];
        let open: Vec<&crate::judge::Episode> = open.iter().collect();
        let pairs = undecided_pairs(&open, Ts::from_secs(1_000), Ts::from_secs(0));
        assert_eq!(
            pairs,
            [
                ("crm".to_string(), "u-7".to_string()),
                ("wiki".to_string(), "alice@corp.example".to_string())
            ]
        );
        // The engine answers each of them, in their order.
        let settings = crate::engine::EngineSettings {
            join_window_secs: 600,
            allowed_lateness_secs: 60,
            gateway_cid_joins: true,
            policy: crate::judge::Policy::from_config(&crate::config::SloConfig::default()),
        };
        let answer = crate::engine::Engine::new(settings).unseen_leavers(&pairs);
        assert_eq!(answer.len(), pairs.len());
    }

    /// A pipeline over `idp.jsonl` and `gateway.log` in a temporary directory, with `extra`
    /// config after the sources (`[slo]`, `[alerting]`, …), driven by made-up wall times.
    fn pipeline_with(extra: &str, idp: &str, gateway: &str) -> (tempfile::TempDir, Pipeline) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("idp.jsonl"), idp).unwrap();
        std::fs::write(dir.path().join("gateway.log"), gateway).unwrap();
        let pipeline = pipeline_in(dir.path(), extra);
        (dir, pipeline)
    }

    /// The pipeline of `pipeline_with`'s config in `dir`, from its checkpoint if it has one.
    fn pipeline_in(dir: &std::path::Path, extra: &str) -> Pipeline {
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{data}"
[[source]]
name = "idp"
role = "idp"
format = "json"
paths = ["{logs}/idp.jsonl*"]
[source.fields]
time = "/ts"
correlation_id = "/cid"
action = "/action"
app = "/app"
user_login = "/user"
status = "/result"
[[source]]
name = "gateway"
role = "gateway"
format = "json"
paths = ["{logs}/gateway.log"]
[source.fields]
time = "/ts"
correlation_id = "/cid"
method = "/method"
path = "/path"
status = "/status"
app = "/app"
principal = "/principal"
{extra}
"#,
            data = dir.join("data").display(),
            logs = dir.display()
        );
        let config = Config::from_toml(&text, dir).unwrap();
        let metrics = Arc::new(Metrics::new(&config));
        Pipeline::open(
            config,
            Arc::new(Mutex::new(LiveStatus::default())),
            metrics,
            Arc::new(Mutex::new(crate::http::RecentOperations::with_capacity(10))),
            None,
        )
        .unwrap()
    }

    /// The start of the made-up time, and a time `secs` after it.
    const T: Ts = Ts(1_782_892_800_000_000);
    fn at(secs: i64) -> Ts {
        Ts(T.0 + secs * MICROS_PER_SEC)
    }

    /// Caught up, a pending operation settles a join window plus the allowed lateness after
    /// its time, on the wall clock alone: not a window plus twice the lateness (the engine
    /// was handed the wall clock less the lateness, and took it off again). Driven with
    /// made-up wall times, so nothing here depends on timing.
    #[test]
    fn caught_up_joins_settle_a_window_plus_the_lateness_after_their_time() {
        let idp = format!(
            "{{\"ts\":\"{T}\",\"cid\":\"c1\",\"action\":\"create\",\"app\":\"wiki\",\"user\":\"a@x\"}}\n"
        );
        let (_dir, mut pipeline) = pipeline_with(
            "[slo]\njoin_window_secs = 10\nallowed_lateness_secs = 5",
            &idp,
            "",
        );
        pipeline.step(at(1)).unwrap();
        pipeline.step(at(1)).unwrap();
        assert_eq!(pipeline.engine.join_pending(), 1);
        pipeline.step(at(14)).unwrap();
        assert_eq!(
            pipeline.engine.join_pending(),
            1,
            "inside window + lateness"
        );
        pipeline.step(at(16)).unwrap();
        assert_eq!(
            pipeline.engine.join_pending(),
            0,
            "settled once 10 s + 5 s have passed, not 10 s + 2 × 5 s"
        );
    }

    fn idp_line(secs: i64, cid: &str, action: &str, app: &str, user: &str, result: &str) -> String {
        format!(
            "{{\"ts\":\"{}\",\"cid\":\"{cid}\",\"action\":\"{action}\",\"app\":\"{app}\",\"user\":\"{user}\",\"result\":\"{result}\"}}\n",
            at(secs)
        )
    }

    fn gateway_line(secs: i64, cid: &str, method: &str, app: &str, status: u16) -> String {
        format!(
            "{{\"ts\":\"{}\",\"cid\":\"{cid}\",\"method\":\"{method}\",\"path\":\"/scim/v2/Users/u-1\",\"status\":{status},\"app\":\"{app}\"}}\n",
            at(secs)
        )
    }

    fn request_line(secs: i64, app: &str, principal: &str) -> String {
        format!(
            "{{\"ts\":\"{}\",\"method\":\"GET\",\"path\":\"/api/v3/user\",\"status\":200,\"app\":\"{app}\",\"principal\":\"{principal}\"}}\n",
            at(secs)
        )
    }

    /// Past the total the merge holds, a file with nothing queued gives the merge one line,
    /// not its whole read budget: the lines held no longer grow with the number of files
    /// (a backlog in 16 rotated files peaked at 261 MB, against 140 MB in one).
    #[test]
    fn lines_held_in_the_merge_do_not_grow_with_the_number_of_files() {
        let (dir, mut pipeline) = pipeline_with("", "", "");
        pipeline.queue_limits = QueueLimits {
            per_file: 20,
            total: 30,
        };
        // Six rotated files of 50 operations each, the oldest the highest number.
        for file in 0..6 {
            let name = match file {
                5 => "idp.jsonl".to_string(),
                n => format!("idp.jsonl.{}", 5 - n),
            };
            let lines: String = (0..50)
                .map(|i| {
                    let n = file * 50 + i;
                    idp_line(n, &format!("c{n}"), "update", "wiki", "a@x", "success")
                })
                .collect();
            std::fs::write(dir.path().join(name), lines).unwrap();
        }
        let mut passes = 0;
        while pipeline.stats.source_mut("idp").lines < 300 {
            pipeline.step(at(400)).unwrap();
            // At most the total, a file's worth for the file the merge waits for, and a
            // line from each other file (all 300 lines, read a budget a file, before).
            assert!(
                pipeline.queued_peak <= 30 + 20 + 5,
                "{}",
                pipeline.queued_peak
            );
            passes += 1;
            assert!(passes < 100, "stuck");
        }
        pipeline.step(at(400)).unwrap();
        // Every line read once and merged, none set aside.
        let stats = pipeline.stats.source_mut("idp");
        assert_eq!((stats.lines, stats.error_count()), (300, 0));
        assert!(pipeline.queues.values().all(VecDeque::is_empty));
        assert_eq!(pipeline.engine.join_pending(), 300);
    }

    /// A first start over more rotations than slots reads them a batch a pass, pass after
    /// pass: it waited the poll interval after each batch (every open file read to its end),
    /// and then a second more for each file to be quiet from its opening (a first start over
    /// 1,500 rotations in 32 slots took 64 s).
    #[test]
    fn a_backlog_of_rotations_is_read_without_waiting_between_batches() {
        let (dir, mut pipeline) = pipeline_with("", "", "");
        let tailer = std::mem::replace(
            &mut pipeline.tailer,
            Tailer::new(Vec::new(), Vec::new(), 0, Duration::ZERO),
        );
        pipeline.tailer = tailer.with_max_open(4);
        for file in 0..9 {
            let name = match file {
                8 => "idp.jsonl".to_string(),
                n => format!("idp.jsonl.{}", 8 - n),
            };
            let lines: String = (0..10)
                .map(|i| {
                    let n = file * 10 + i;
                    idp_line(n, &format!("c{n}"), "update", "wiki", "a@x", "success")
                })
                .collect();
            let path = dir.path().join(name);
            std::fs::write(&path, lines).unwrap();
            let written = std::time::SystemTime::now() - Duration::from_secs(3_600 - file as u64);
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(written).unwrap();
        }
        let mut passes = 0;
        while pipeline.stats.source_mut("idp").lines < 90 {
            pipeline.step(at(400)).unwrap();
            passes += 1;
            assert!(passes < 20, "stuck");
            let waiting = pipeline.tailer.counters().files_waiting;
            assert!(
                !pipeline.read_all || waiting == 0,
                "pass {passes}: {waiting} files wait, and the next pass would too"
            );
        }
        pipeline.step(at(400)).unwrap();
        assert_eq!(pipeline.engine.join_pending(), 90);
        assert!(pipeline.read_all, "caught up, the next pass waits");
    }

    /// A first start over a backlog joins it as `replay` does. A log under 256 bytes is
    /// opened a pass after it is first listed (it may be a copy being written); the merge
    /// went on without it, so the IdP's disables, 50 minutes old, came out unconfirmed and
    /// the gateway's writes unattributed a pass later (helper-50).
    #[test]
    fn a_backlog_of_leavers_joins_on_a_first_start() {
        let idp = [
            idp_line(0, "k0", "deactivate", "github", "u0@x", "success"),
            idp_line(10, "k1", "deactivate", "github", "u1@x", "success"),
            idp_line(20, "k2", "deactivate", "github", "u2@x", "success"),
        ]
        .concat();
        let gateway = [
            gateway_line(1, "k0", "PATCH", "github", 200),
            gateway_line(11, "k1", "PATCH", "github", 200),
        ]
        .concat();
        assert!(idp.len() >= 256 && gateway.len() < 256);
        let (_dir, mut pipeline) =
            pipeline_with("[alerting]\nstale_after_secs = 86400", &idp, &gateway);
        pipeline.step(at(3000)).unwrap();
        pipeline.step(at(3000)).unwrap();
        let leaver = pipeline
            .live
            .stages
            .get("leaver")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (
                leaver.succeeded,
                leaver.unconfirmed,
                pipeline.live.unattributed
            ),
            (2, 1, 0)
        );
    }

    /// A line more than a join window (plus the lateness) late is judged as `replay` judges
    /// it: its operation was settled before it came. Read in the same pass as the lines
    /// before it, it was joined (the clock moved once a pass), and `run` and `replay` gave
    /// different answers on the same logs (QA helper-54).
    #[test]
    fn a_line_later_than_its_window_is_judged_as_replay_judges_it() {
        let idp = [
            idp_line(0, "a", "create", "slack", "a@x", "success"),
            idp_line(900, "b", "create", "slack", "b@x", "success"),
        ]
        .concat();
        let gateway = [
            gateway_line(901, "b", "POST", "slack", 201),
            gateway_line(1, "a", "POST", "slack", 201),
        ]
        .concat();
        let (_dir, mut pipeline) =
            pipeline_with("[alerting]\nstale_after_secs = 86400", &idp, &gateway);
        for _ in 0..3 {
            pipeline.step(at(3000)).unwrap();
        }
        let joiner = (pipeline.live.stages.get("joiner").cloned()).unwrap_or_default();
        assert_eq!(
            (
                joiner.succeeded,
                joiner.unconfirmed,
                pipeline.live.unattributed
            ),
            (1, 1, 1),
            "b joined; a settled unconfirmed before its write came, which is unattributed"
        );
    }

    fn holds(pipeline: &Pipeline, alert: &str, tier: Option<&str>) -> bool {
        pipeline.live.alerts.iter().any(|c| {
            c.alert == alert
                && tier.is_none_or(|t| c.labels.get("burn_tier").map(String::as_str) == Some(t))
        })
    }

    fn firing(pipeline: &Pipeline, alert: &str) -> bool {
        pipeline.alerts.firing().any(|(_, c)| c.alert == alert)
    }

    /// With the default windows (a 600 s join window, 60 s of lateness, a 600 s post-disable
    /// window), a request made as a disabled user pages. It is seen 2 × 600 + 60 s after it
    /// was made, and the alert's window ended at the clock, so it never did (helper-43).
    #[test]
    fn a_request_as_a_disabled_user_pages_with_the_default_windows() {
        let idp = idp_line(0, "d1", "deactivate", "github", "bob@x", "success");
        let gateway =
            gateway_line(1, "d1", "DELETE", "github", 204) + &request_line(3, "github", "bob@x");
        let (_dir, mut pipeline) = pipeline_with("", &idp, &gateway);
        let mut paged = Vec::new();
        for secs in (5..2_400).step_by(30) {
            pipeline.step(at(secs)).unwrap();
            if holds(&pipeline, "PostDisableActivity", None) {
                assert!(firing(&pipeline, "PostDisableActivity"), "pages at once");
                paged.push(secs);
            }
        }
        assert_eq!(pipeline.live.post_disable_requests, 1);
        let (first, last) = (paged[0], paged[paged.len() - 1]);
        assert!(
            (1_263..1_300).contains(&first),
            "pages once the request is checked: {paged:?}"
        );
        assert!(
            last < 1_263 + 600,
            "held over the post-disable window: {paged:?}"
        );
    }

    /// A line set aside is said, counted and sampled once the checkpoint past it is written:
    /// said as it was read, a crash before that checkpoint had the next process read, say and
    /// count it again (QA helper-57: two warnings, and 2 in Prometheus's `increase()`).
    #[test]
    fn a_line_set_aside_is_counted_once_across_a_crash() {
        let extra = "[pipeline]\ncheckpoint_interval_secs = 3600\n";
        // (Longer than a file's head: a shorter file waits a pass to be opened.)
        let bad = format!("not json {}\n", "x".repeat(300));
        let (dir, mut pipeline) = pipeline_with(extra, &bad, "");
        let counted = |pipeline: &Pipeline| {
            let labels = m::ParseErrorLabels {
                source: "idp".into(),
                reason: "invalid_json".into(),
            };
            let metric = pipeline.metrics.parse_errors.get_or_create(&labels).get();
            let stats = (pipeline.stats.sources.get("idp")).map_or(0, |s| s.error_count());
            (metric, stats)
        };
        pipeline.step(at(5)).unwrap();
        assert_eq!(pipeline.set_aside.len(), 1, "read and set aside");
        assert_eq!(counted(&pipeline), (0, 0), "not yet: no checkpoint past it");
        drop(pipeline); // killed
        let mut pipeline = pipeline_in(dir.path(), extra);
        pipeline.step(at(6)).unwrap();
        pipeline.checkpoint(at(6)).unwrap();
        assert_eq!(counted(&pipeline), (1, 1));
        assert!(pipeline.set_aside.is_empty());
        drop(pipeline);
        // Past the checkpoint, a restart does not read it again.
        let mut pipeline = pipeline_in(dir.path(), extra);
        pipeline.step(at(7)).unwrap();
        pipeline.checkpoint(at(7)).unwrap();
        assert_eq!(counted(&pipeline), (0, 0));
    }

    /// Past the lines held one by one between two checkpoints, a backlog of bad lines is only
    /// counted: memory stays bounded, and the count is still exact (helper-58).
    #[test]
    fn lines_set_aside_past_the_held_limit_are_counted_not_held() {
        let extra = "[pipeline]\ncheckpoint_interval_secs = 3600\n";
        let total = MAX_SET_ASIDE_HELD + 5;
        let bad: String = (0..total).map(|i| format!("not json {i}\n")).collect();
        let (_dir, mut pipeline) = pipeline_with(extra, &bad, "");
        let more = |pipeline: &Pipeline| pipeline.set_aside_more.values().sum::<u64>() as usize;
        for secs in 0..100 {
            pipeline.step(at(secs)).unwrap();
            if pipeline.set_aside.len() + more(&pipeline) == total {
                break;
            }
        }
        assert_eq!(pipeline.set_aside.len(), MAX_SET_ASIDE_HELD);
        assert_eq!(more(&pipeline), 5);
        pipeline.checkpoint(at(100)).unwrap();
        let labels = m::ParseErrorLabels {
            source: "idp".into(),
            reason: "invalid_json".into(),
        };
        let counted = pipeline.metrics.parse_errors.get_or_create(&labels).get();
        assert_eq!(counted, total as u64);
        assert_eq!(pipeline.stats.sources["idp"].error_count(), total as u64);
        assert!(pipeline.set_aside.is_empty() && pipeline.set_aside_more.is_empty());
    }

    /// An app only the IdP named keeps its `app` label across a restart: without it, its
    /// refused writes counted under `other` until the IdP named it again, and its alerts
    /// resolved and paged again as `other` (helper-58).
    #[test]
    fn apps_the_idp_named_keep_their_label_across_a_restart() {
        let long = "x".repeat(300); // (opened at once)
        let idp = idp_line(
            1,
            "c-1",
            "create",
            "wiki-new",
            &format!("u{long}"),
            "success",
        );
        let (dir, mut pipeline) = pipeline_with("", &idp, "");
        for secs in 2..5 {
            pipeline.step(at(secs)).unwrap();
        }
        let label = |pipeline: &Pipeline| pipeline.metrics.unclaimed_app_label(Some("wiki-new"));
        assert_eq!(label(&pipeline), "wiki-new");
        pipeline.checkpoint(at(5)).unwrap();
        drop(pipeline);
        let pipeline = pipeline_in(dir.path(), "");
        assert_eq!(label(&pipeline), "wiki-new");
        assert_eq!(
            pipeline.metrics.unclaimed_app_label(Some("made-up")),
            "other"
        );
    }

    /// Writes refused with 401 and no correlation ID (a stolen token's) page ScimAuthFailures
    /// with the default windows: they wait three join windows in the join's pool, and the
    /// window, ending where the operations are judged, had left them behind by then
    /// (helper-46).
    #[test]
    fn refused_writes_without_a_correlation_id_page_with_the_default_windows() {
        let gateway: String = (0..5)
            .map(|i| {
                format!(
                    "{{\"ts\":\"{}\",\"method\":\"POST\",\"path\":\"/scim/v2/Users\",\"status\":401,\"app\":\"jira\"}}\n",
                    at(i)
                )
            })
            .collect();
        for restart in [false, true] {
            let (dir, mut pipeline) = pipeline_with("", "", &gateway);
            let mut paged = Vec::new();
            for secs in (5..3_600).step_by(30) {
                if restart && secs == 1_205 {
                    // Stopped and started again while the writes wait in the pool: what the
                    // first pass judges counts from where the windows ended (helper-47).
                    pipeline.checkpoint(at(secs)).unwrap();
                    drop(pipeline);
                    pipeline = pipeline_in(dir.path(), "");
                }
                pipeline.step(at(secs)).unwrap();
                if holds(&pipeline, "ScimAuthFailures", None) {
                    paged.push(secs);
                }
            }
            assert!(
                !paged.is_empty(),
                "restart {restart}: {:#?}",
                pipeline.live.alerts
            );
        }
    }

    /// The page for refused writes without a correlation ID says what they are, writes no
    /// IdP sent, whatever the windows: counted where they were judged but quoted by their
    /// own time, the line was left out once the join windows outlast the auth-failure
    /// window's (helper-50).
    #[test]
    fn a_page_for_refused_writes_says_no_idp_sent_them() {
        let gateway: String = (0..5)
            .map(|i| {
                format!(
                    "{{\"ts\":\"{}\",\"method\":\"POST\",\"path\":\"/scim/v2/Users\",\"status\":401,\"app\":\"jira\"}}\n",
                    at(i)
                )
            })
            .collect();
        let extra = "[slo]\njoin_window_secs = 60\nallowed_lateness_secs = 5\n\
                     [alerting]\nauth_failure_window_secs = 90";
        let (_dir, mut pipeline) = pipeline_with(extra, "", &gateway);
        let mut paged = 0;
        for secs in (5..600).step_by(5) {
            pipeline.step(at(secs)).unwrap();
            for alert in (pipeline.live.alerts.iter()).filter(|c| c.alert == "ScimAuthFailures") {
                paged += 1;
                let details = alert.details.join("\n");
                assert!(
                    details.contains("5 of them writes with no IdP record"),
                    "{secs}: {details}"
                );
            }
        }
        assert!(paged > 0);
    }

    /// Old refusals turning up late (a file of them found once caught up), none three within
    /// 15 minutes of each other, do not page ScimAuthFailures: each counts no later than the
    /// longest a write waits in the join after its time (counted when judged, they were all
    /// in the last 15 minutes: helper-47).
    #[test]
    fn old_refusals_found_late_do_not_page() {
        let (dir, mut pipeline) = pipeline_with("", "", "");
        pipeline.step(at(20_000)).unwrap();
        let late: String = (0..19)
            .map(|i| {
                format!(
                    "{{\"ts\":\"{}\",\"method\":\"POST\",\"path\":\"/scim/v2/Users\",\"status\":401,\"app\":\"jira\"}}\n",
                    at(20_000 - 14_400 + 600 * i)
                )
            })
            .collect();
        std::fs::write(dir.path().join("gateway.log"), late).unwrap();
        for secs in (20_000..24_000).step_by(30) {
            pipeline.step(at(secs)).unwrap();
            assert!(
                !holds(&pipeline, "ScimAuthFailures", None),
                "{secs}: {:#?}",
                pipeline.live.alerts
            );
        }
        let judged = (pipeline.metrics.unattributed_writes)
            .get_or_create(&m::AppLabels {
                app: "other".into(),
            })
            .get();
        assert_eq!(judged, 19, "all judged");
    }

    /// With the default windows, an hour of movers 30% of which fail burns the budget in the
    /// fast tier (1 h and 5 m over 14.4×): the 5 minutes ended at the clock, where nothing
    /// is judged yet, so that tier could never hold (helper-43).
    #[test]
    fn the_fast_burn_tier_holds_with_the_default_windows() {
        let (mut idp, mut gateway) = (String::new(), String::new());
        for i in 0..360 {
            let cid = format!("m{i}");
            idp.push_str(&idp_line(
                10 * i,
                &cid,
                "update",
                "wiki",
                &format!("u{i}@x"),
                "success",
            ));
            let status = if i % 10 < 3 { 500 } else { 200 };
            gateway.push_str(&gateway_line(10 * i + 1, &cid, "PATCH", "wiki", status));
        }
        let (_dir, mut pipeline) = pipeline_with("", &idp, &gateway);
        pipeline.step(at(3_600 + 700)).unwrap();
        pipeline.step(at(3_600 + 700)).unwrap();
        assert!(
            holds(&pipeline, "ErrorBudgetBurn", Some("fast")),
            "{:#?}",
            pipeline.live.alerts
        );
        let window = |name: &str| {
            pipeline.live.slo["mover"]
                .iter()
                .find(|w| w.window == name)
                .map(|w| w.operations)
        };
        assert!(window("5m") >= Some(20), "{:?}", pipeline.live.slo["mover"]);
        assert_eq!(pipeline.live.judged_until, Some(at(3_600 + 700 - 660)));
    }

    /// A leaver paged as overdue stays firing while a backlog of older lines is read: the
    /// clock follows the backlog's events back before its deadline, and the page was resolved,
    /// then sent again once caught up (helper-43).
    #[test]
    fn a_backlog_of_older_lines_does_not_resolve_an_overdue_leaver() {
        let idp = idp_line(0, "L1", "deactivate", "vault", "root@x", "failure");
        let gateway = gateway_line(1, "L1", "DELETE", "vault", 503);
        let extra = "[pipeline]\nread_budget_bytes = 1\n[[slo.high_risk]]\napps = [\"vault\"]\n[alerting]\nkeep_firing_secs = 0";
        let (dir, mut pipeline) = pipeline_with(extra, &idp, &gateway);
        for _ in 0..4 {
            pipeline.step(at(2_000)).unwrap();
        }
        assert!(firing(&pipeline, "LeaverDisableOverdue"));
        let old: String = (0..5)
            .map(|i| request_line(100 + i, "vault", "someone@x"))
            .collect();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("gateway.log"))
            .unwrap();
        std::io::Write::write_all(&mut file, old.as_bytes()).unwrap();
        for secs in 2_001..2_010 {
            pipeline.step(at(secs)).unwrap();
            assert!(
                firing(&pipeline, "LeaverDisableOverdue"),
                "at {secs}, caught up {}, clock {:?}",
                pipeline.live.caught_up,
                pipeline.live.clock
            );
        }
        assert!(pipeline.live.caught_up);
    }

    #[test]
    fn opens_and_reads_do_not_wake_the_pipeline() {
        use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
        use notify::event::{RemoveKind, RenameMode};
        let wakes = |kind| super::Pipeline::wakes(&notify::Event::new(kind));
        assert!(!wakes(EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!wakes(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!wakes(EventKind::Access(AccessKind::Read)));
        assert!(wakes(EventKind::Modify(ModifyKind::Any)));
        assert!(wakes(EventKind::Modify(ModifyKind::Name(RenameMode::Both))));
        assert!(wakes(EventKind::Create(CreateKind::File)));
        assert!(wakes(EventKind::Remove(RemoveKind::File)));
        assert!(wakes(EventKind::Any));
    }
}
