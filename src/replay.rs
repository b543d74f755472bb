//! `scimwatch replay`: the core over whole files, for post-mortems and audits.
//!
//! Every file of every source is a stream; streams are merged by the time of their next record
//! (so the IdP and gateway logs interleave as they happened, even across rotated files), and
//! the engine's clock follows the newest event. At the end of input every pending join is
//! settled as if its window had passed (clarification 7).

use crate::config::{Config, Role};
use crate::engine::{Engine, EngineSettings, Output};
use crate::model::Record;
use crate::parse::{LineParser, ParseError, Reason};
use crate::report::{Report, ReportBuilder};
use crate::source::reader::{Line, LineReader};
use crate::source::IngestStats;
use crate::time::Ts;
use anyhow::{bail, Context};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fs::File;
use std::path::PathBuf;

/// What `replay` reads beyond the config.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Replaces the paths of the (single) `idp` source.
    pub idp_files: Vec<PathBuf>,
    /// Replaces the paths of the (single) `gateway` source.
    pub gateway_files: Vec<PathBuf>,
    /// The report's instant; default: the newest event time.
    pub as_of: Option<Ts>,
    /// 1 (or 0): everything on the calling thread; 2: the files are read and parsed, and the
    /// sink run, on a second thread; 3 or more: the sink on a third (see [`replay`]).
    pub threads: usize,
    /// Leaver episodes an earlier replay into the same store left open (`--append`): this
    /// one carries on with them, so a disable in these logs closes them, late if it is.
    pub carried_over: Vec<crate::judge::Episode>,
    /// Pairs an earlier replay into the same store saw disabled (`--append`).
    pub carried_closed: Vec<crate::judge::Closed>,
}

struct Stream {
    parser: usize,
    file: u32,
    reader: LineReader<File>,
    head: Option<Record>,
    /// Lines parsed into records, and the newest event time among them: counted here and
    /// added to the source's stats when the stream ends (a map lookup per line cost 1%).
    records: u64,
    last_event: Option<Ts>,
}

/// Why `--idp`/`--gateway` cannot be applied: it replaces the files of the one source of its
/// role, and the config has several.
pub fn ambiguous_override(config: &Config, options: &ReplayOptions) -> Option<String> {
    [
        (Role::Idp, &options.idp_files, "--idp"),
        (Role::Gateway, &options.gateway_files, "--gateway"),
    ]
    .into_iter()
    .find_map(|(role, files, flag)| {
        let matching: Vec<&str> = config
            .sources
            .iter()
            .filter(|s| s.role == role)
            .map(|s| s.name.as_str())
            .collect();
        (!files.is_empty() && matching.len() > 1).then(|| {
            format!(
                "{flag} is ambiguous: sources {} all have role {}",
                matching.join(", "),
                role.as_str()
            )
        })
    })
}

/// The files of each source, after `--idp`/`--gateway` overrides and glob expansion.
pub fn source_files(config: &Config, options: &ReplayOptions) -> anyhow::Result<Vec<Vec<PathBuf>>> {
    let mut all = Vec::new();
    if let Some(why) = ambiguous_override(config, options) {
        bail!(why);
    }
    for source in &config.sources {
        let overridden = match source.role {
            Role::Idp if !options.idp_files.is_empty() => Some(&options.idp_files),
            Role::Gateway if !options.gateway_files.is_empty() => Some(&options.gateway_files),
            _ => None,
        };
        let files = match overridden {
            Some(files) => {
                for file in files {
                    if let Some(why) = crate::source::unreadable_log(file) {
                        bail!("{}: {why}", file.display());
                    }
                }
                files.clone()
            }
            None => {
                let mut found = BTreeSet::new();
                for pattern in config.source_globs(source) {
                    let paths = glob::glob(&pattern).with_context(|| {
                        format!("source {:?}: bad glob {pattern:?}", source.name)
                    })?;
                    for path in paths.flatten() {
                        if path.is_file() && !crate::source::is_compressed(&path) {
                            found.insert(path);
                        }
                    }
                }
                found.into_iter().collect()
            }
        };
        all.push(files);
    }
    Ok(all)
}

/// Records (or outputs) handed from one thread to another at a time: enough that a batch costs
/// the channel nothing per item, few enough that `BATCHES_IN_FLIGHT` of them stay small.
const BATCH: usize = 1024;
const BATCHES_IN_FLIGHT: usize = 8;

/// What the reading thread sends the engine: records in merged order, then the input's stats.
enum ToEngine {
    Records(Vec<Record>),
    Done(IngestStats),
}

type Outputs = Vec<(Output, Ts)>;

/// A thread found the other end of its channel gone: the other side stopped, and its own
/// error (or its panic) is the one to report.
#[derive(Debug, thiserror::Error)]
#[error("a replay thread stopped")]
struct HungUp;

/// Runs the core over the configured files. Every output also goes to `sink` (Parquet), with
/// the instant open episodes are judged at (`--as-of`, else the newest event so far; final
/// for the episodes `finish` reports).
///
/// `options.threads`: with 1, everything runs on the calling thread. With 2, the files are
/// read and parsed on a second thread, which also runs `sink` between batches, while the
/// calling thread joins and judges. With 3 or more, `sink` runs on a third. The engine sees
/// the same records in the same order and `sink` the same outputs in the same order either
/// way, so the report and every output are the same.
pub fn replay(
    config: &Config,
    options: &ReplayOptions,
    mut sink: impl FnMut(Output, Ts) -> anyhow::Result<()> + Send,
) -> anyhow::Result<(Report, IngestStats)> {
    let _cache = crate::alloc::cache_this_thread();
    let files = source_files(config, options)?;
    let mut parsers = Vec::new();
    let mut stats = IngestStats::default();
    for (index, source) in config.sources.iter().enumerate() {
        parsers.push(LineParser::new(source, &config.apps, index as u16)?);
        stats.register(&source.name);
        if files[index].is_empty() {
            eprintln!(
                "warning: source {:?} has no files matching {:?}",
                source.name, source.paths
            );
        }
    }
    if files.iter().all(Vec::is_empty) {
        bail!("no input: no source has a file matching its paths");
    }
    let mut streams = Vec::new();
    for (parser, paths) in files.iter().enumerate() {
        for path in paths {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let file_id = stats.files.len() as u32;
            stats.files.push(path.clone());
            streams.push(Stream {
                parser,
                file: file_id,
                reader: LineReader::new(file, parsers[parser].max_line_bytes),
                head: None,
                records: 0,
                last_event: None,
            });
        }
    }
    let mut engine = Engine::new(EngineSettings::from_config(config));
    // Open episodes first: a pair with one keeps it, and no closure from before it (an
    // episode opened after a closure means the user was rehired in between).
    engine.carry_over(options.carried_over.iter().cloned());
    engine.carry_closed(&options.carried_closed);
    let mut core = Core {
        engine,
        builder: ReportBuilder::new(&config.slo),
        as_of: options.as_of,
    };
    if options.threads <= 1 {
        merge(&mut streams, &parsers, &mut stats, |record| {
            core.push(record, &mut sink)
        })?;
        let report = core.finish(&stats, &mut sink)?;
        return Ok((report, stats));
    }
    let sink = &mut sink;
    let (to_engine, from_reader) = std::sync::mpsc::sync_channel::<ToEngine>(BATCHES_IN_FLIGHT);
    let input = Input {
        streams,
        parsers,
        stats,
        to_engine,
    };
    std::thread::scope(|scope| {
        let (engine, others) = if options.threads == 2 {
            // Unbounded, so the engine never waits for the reader (which may be waiting for
            // the engine): it holds what the engine settles while one batch is parsed.
            let (outputs, from_engine) = std::sync::mpsc::channel::<Outputs>();
            let reader = spawn(scope, "replay-read", move || {
                let mut write = |batch| write_outputs(sink, batch);
                input.read(|| from_engine.try_iter().try_for_each(&mut write))?;
                // The engine still settles what was pending at the end of input.
                from_engine.iter().try_for_each(&mut write)
            })?;
            let engine = engine_side(core, from_reader, |batch| outputs.send(batch).is_ok());
            (engine, vec![reader])
        } else {
            let (outputs, from_engine) =
                std::sync::mpsc::sync_channel::<Outputs>(BATCHES_IN_FLIGHT);
            let reader = spawn(scope, "replay-read", move || input.read(|| Ok(())))?;
            let writer = spawn(scope, "replay-sink", move || {
                from_engine
                    .iter()
                    .try_for_each(|batch| write_outputs(sink, batch))
            })?;
            let engine = engine_side(core, from_reader, |batch| outputs.send(batch).is_ok());
            (engine, vec![reader, writer])
        };
        // The engine's ends of its channels are closed: every other thread ends, and the
        // error to report is the one that stopped the rest (not a thread's hang-up).
        let mut first_error = None;
        for thread in others {
            let result = thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if let Err(error) = result {
                if first_error.is_none() && error.downcast_ref::<HungUp>().is_none() {
                    first_error = Some(error);
                }
            }
        }
        match (engine, first_error) {
            (Err(error), _) if error.downcast_ref::<HungUp>().is_none() => Err(error),
            (_, Some(error)) | (Err(error), None) => Err(error),
            (Ok(Some(done)), None) => Ok(done),
            (Ok(None), None) => bail!("the reading thread stopped before the end of input"),
        }
    })
}

/// Adds `item` to `batch`; once it holds [`BATCH`] items, takes them out to be sent.
fn add_to_batch<T>(batch: &mut Vec<T>, item: T) -> Option<Vec<T>> {
    batch.push(item);
    (batch.len() == BATCH).then(|| std::mem::replace(batch, Vec::with_capacity(BATCH)))
}

/// Hands a batch the engine sent to the sink, in order.
fn write_outputs(
    sink: &mut impl FnMut(Output, Ts) -> anyhow::Result<()>,
    batch: Outputs,
) -> anyhow::Result<()> {
    batch
        .into_iter()
        .try_for_each(|(output, as_of)| sink(output, as_of))
}

fn spawn<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    work: impl FnOnce() -> anyhow::Result<()> + Send + 'scope,
) -> anyhow::Result<std::thread::ScopedJoinHandle<'scope, anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(scope, move || {
            let _cache = crate::alloc::cache_this_thread();
            work()
        })
        .with_context(|| format!("starting the {name} thread"))
}

/// The reading side of a threaded replay.
struct Input {
    streams: Vec<Stream>,
    parsers: Vec<LineParser>,
    stats: IngestStats,
    to_engine: std::sync::mpsc::SyncSender<ToEngine>,
}

impl Input {
    /// Reads and parses everything, sending the records on in batches, then the stats;
    /// `between` runs after each batch sent.
    fn read(mut self, mut between: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
        let send = |message| self.to_engine.send(message).map_err(|_| HungUp);
        let mut batch = Vec::with_capacity(BATCH);
        merge(
            &mut self.streams,
            &self.parsers,
            &mut self.stats,
            |record| {
                if let Some(full) = add_to_batch(&mut batch, record) {
                    send(ToEngine::Records(full))?;
                    between()?;
                }
                Ok(())
            },
        )?;
        if !batch.is_empty() {
            send(ToEngine::Records(batch))?;
        }
        send(ToEngine::Done(self.stats))?;
        Ok(())
    }
}

/// The engine's side of a threaded replay: records in until the reader is done, outputs sent
/// on in batches. Returns `None` if the reader hung up before it was done (it failed).
fn engine_side(
    mut core: Core,
    from_reader: std::sync::mpsc::Receiver<ToEngine>,
    mut send: impl FnMut(Outputs) -> bool,
) -> anyhow::Result<Option<(Report, IngestStats)>> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut emit = |output: Output, as_of: Ts| {
        let full = add_to_batch(&mut batch, (output, as_of));
        if full.is_none_or(&mut send) {
            Ok(())
        } else {
            Err(HungUp.into())
        }
    };
    for message in from_reader {
        match message {
            ToEngine::Records(records) => {
                let mut records = records.into_iter();
                while let Some(record) = records.next() {
                    // The reading thread wrote the texts: ask for a later record's now.
                    if let Some(later) = records.as_slice().get(3) {
                        later.prefetch();
                    }
                    core.push(record, &mut emit)?;
                }
            }
            ToEngine::Done(stats) => {
                let report = core.finish(&stats, &mut emit)?;
                if !batch.is_empty() && !send(std::mem::take(&mut batch)) {
                    return Err(HungUp.into());
                }
                return Ok(Some((report, stats)));
            }
        }
    }
    Ok(None)
}

/// The engine's side of a replay: records in, in time order; outputs to the report and to
/// `emit`.
struct Core {
    engine: Engine,
    builder: ReportBuilder,
    as_of: Option<Ts>,
}

impl Core {
    fn push(
        &mut self,
        record: Record,
        emit: &mut impl FnMut(Output, Ts) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let engine = &mut self.engine;
        engine.ingest(record);
        if let Some(watermark) = engine.watermark() {
            engine.advance(watermark);
        }
        let as_of = self.as_of.or(engine.watermark()).unwrap_or_default();
        hand_on(engine, &mut self.builder, as_of, emit)
    }

    /// At the end of input every pending join is settled as if its window had passed.
    fn finish(
        mut self,
        stats: &IngestStats,
        emit: &mut impl FnMut(Output, Ts) -> anyhow::Result<()>,
    ) -> anyhow::Result<Report> {
        let as_of = self.as_of.or(self.engine.watermark());
        let builder = &mut self.builder;
        // In steps, so that a sink on another thread works on the first outputs while the
        // engine settles the rest.
        self.engine.finish_in_steps(BATCH, |engine| {
            hand_on(engine, builder, as_of.unwrap_or_default(), emit)
        })?;
        Ok(self.builder.build(as_of, stats, self.engine.join_stats()))
    }
}

/// Hands what the engine has settled so far to the report and to `emit`, in order.
fn hand_on(
    engine: &mut Engine,
    builder: &mut ReportBuilder,
    as_of: Ts,
    emit: &mut impl FnMut(Output, Ts) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for output in engine.drain() {
        builder.add(&output);
        emit(output, as_of)?;
    }
    Ok(())
}

/// Merges the streams by the time of their next record, handing each record to `emit`.
fn merge(
    streams: &mut [Stream],
    parsers: &[LineParser],
    stats: &mut IngestStats,
    mut emit: impl FnMut(Record) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut heap = BinaryHeap::new();
    for (index, stream) in streams.iter_mut().enumerate() {
        if let Some(time) = fill_head(stream, parsers, stats)? {
            heap.push(Reverse((time, index)));
        }
    }
    while let Some(Reverse((_, index))) = heap.pop() {
        let stream = &mut streams[index];
        let Some(record) = stream.head.take() else {
            continue;
        };
        emit(record)?;
        if let Some(time) = fill_head(stream, parsers, stats)? {
            heap.push(Reverse((time, index)));
        }
    }
    Ok(())
}

/// Reads a stream up to its next record; returns that record's time, or `None` at EOF.
fn fill_head(
    stream: &mut Stream,
    parsers: &[LineParser],
    stats: &mut IngestStats,
) -> anyhow::Result<Option<Ts>> {
    let parser = &parsers[stream.parser];
    loop {
        let line = stream
            .reader
            .next_line()
            .with_context(|| format!("reading {}", stats.files[stream.file as usize].display()))?;
        let Some(line) = line else {
            let source = stats.source_mut(&parser.name);
            source.lines += std::mem::take(&mut stream.records);
            if let Some(time) = stream.last_event.take() {
                source.last_event = Some(source.last_event.map_or(time, |t| t.max(time)));
            }
            return Ok(None);
        };
        match line {
            Line::TooLong {
                length,
                number,
                offset,
                ..
            } => {
                stats.line(&parser.name);
                let error = ParseError {
                    reason: Reason::LineTooLong,
                    detail: format!(
                        "{length} bytes (max_line_bytes = {})",
                        parser.max_line_bytes
                    ),
                };
                stats.error(&parser.name, stream.file, number, offset, &error);
            }
            Line::Text {
                bytes,
                number,
                offset,
                ..
            } => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue; // blank lines are not records and not errors
                }
                match parser.parse(bytes, stream.file, number) {
                    Ok(record) => {
                        let time = record.time();
                        stream.records += 1;
                        stream.last_event = Some(stream.last_event.map_or(time, |t| t.max(time)));
                        stream.head = Some(record);
                        return Ok(Some(time));
                    }
                    Err(error) => {
                        stats.line(&parser.name);
                        stats.error(&parser.name, stream.file, number, offset, &error);
                    }
                }
            }
        }
    }
}
