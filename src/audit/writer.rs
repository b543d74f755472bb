//! Appends judged operations and leaver episodes to the Parquet tables.
//!
//! Rows are buffered per table and date and written as a new file when a buffer reaches
//! `rows_per_file`, or when the owner calls [`AuditWriter::flush`] (the daemon does so by age,
//! replay at the end). Every file is written aside, synced and renamed into
//! `<root>/<table>/date=YYYY-MM-DD/`, so a reader never sees a part of one.

use super::coded::CodedChunk;
use super::ids::IdChunk;
use super::names::NameChunk;
use super::schema::{
    self, Column, Columns, LeaverRow, OperationView, OperationsBuilder, PostDisableRow, Table,
};
use crate::durable;
use crate::engine::Output;
use crate::judge::{ClockStart, Episode, EpisodeState, Operation, PostDisableActivity};
use crate::time::Ts;
use arrow_array::{Array, ArrayRef, StringArray};
use arrow_schema::Field;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Rows per row group ([`TableWriter`] closes them): large enough for good compression, small
/// enough for readers to skip.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Rows buffered before they are handed to the Parquet encoder, which keeps adding them to the
/// open row group: the encoding work comes in small steps while the rows are still in cache,
/// rather than in one pause per row group (a threaded replay's engine waited out each pause).
const SPILL_ROWS: usize = 4 * 1024;

/// An audit store failure, naming the path. The cause is part of the message, not a source of
/// its own: `{:#}` would print it twice ("…: File exists (os error 17): File exists …").
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: cannot write Parquet: {error}")]
    Parquet {
        path: PathBuf,
        error: parquet::errors::ParquetError,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// An export's `--out` holds something already: bad usage, not a fault of the store.
    #[error("{path}: already exists and is not empty; refusing to overwrite a pack")]
    PackExists { path: PathBuf },
}

impl AuditError {
    pub fn io(path: &Path, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.to_path_buf(),
            error: source,
        }
    }
}

/// How the writer lays out each table, as measured on the 1M-operation bench set (issue #8):
/// zstd level 1 costs less than level 3 and, on these pages, also writes less (41.9 against
/// 43.3 MB); times and lags written as deltas leave zstd half the bytes (−2% of a replay's
/// instructions, for 1% more on disk); `path` gains from a dictionary (2.6 → 2.2 MB), while
/// users and IDs lose (`user_login` 4.3 → 5.3 MB: nearly every value is new to its group).
/// Those texts have their lengths written apart from their bytes (`DELTA_LENGTH_BYTE_ARRAY`):
/// zstd sees 4 bytes a value fewer, and the 100k set's files are 7% smaller for 1% fewer
/// instructions. The delta-packed IdP times, lags and leaver times are dense bits zstd cannot
/// shrink (1.000 of their size on the 1M set; the attempt times, 0.82–0.84): they are left
/// uncompressed, −0.4% of the instructions for 0.01% more on disk. (The coded columns' pages
/// are made in [`super::coded`], the top-level IDs' in [`super::ids`], the apps' and
/// actions' in [`super::names`], whatever is set here.)
pub fn properties(table: Table) -> WriterProperties {
    // Nearly every value distinct: no dictionary; the texts' lengths apart.
    let texts = distinct_texts(table);
    let (numbers, deltas): (&[&str], &[&str]) = match table {
        Table::Operations => (
            &[],
            &[
                "idp_time",
                "first_attempt_time",
                "last_attempt_time",
                "lag_ms",
                "ingested_at",
            ],
        ),
        Table::Leavers => (
            &["latency_seconds"],
            &["initiated_at", "first_attempt_at", "disabled_at", "as_of"],
        ),
        Table::PostDisableActivity => (&["http_status"], &["time", "disabled_at"]),
    };
    let incompressible: &[&str] = match table {
        Table::Operations => &["idp_time", "lag_ms"],
        Table::Leavers => &["initiated_at", "first_attempt_at", "disabled_at"],
        Table::PostDisableActivity => &[],
    };
    let path = |dotted: &str| ColumnPath::new(dotted.split('.').map(String::from).collect());
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd_level()))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(
                "scimwatch.schema_version".into(),
                schema::SCHEMA_VERSION.to_string(),
            ),
            KeyValue::new("scimwatch.producer".into(), schema::producer()),
            KeyValue::new("scimwatch.table".into(), table.name().to_string()),
        ]));
    for column in texts.iter().chain(numbers).chain(deltas) {
        builder = builder.set_column_dictionary_enabled(path(column), false);
    }
    for column in texts {
        builder = builder.set_column_encoding(path(column), Encoding::DELTA_LENGTH_BYTE_ARRAY);
    }
    for column in deltas {
        builder = builder.set_column_encoding(path(column), Encoding::DELTA_BINARY_PACKED);
    }
    for column in incompressible {
        builder = builder.set_column_compression(path(column), Compression::UNCOMPRESSED);
    }
    builder.build()
}

/// The text columns whose values are nearly all distinct (IDs and logins), by dotted path:
/// written as `DELTA_LENGTH_BYTE_ARRAY` without a dictionary, the top-level ones by
/// [`IdChunk`] (the leavers' list of correlation IDs by parquet-rs).
fn distinct_texts(table: Table) -> &'static [&'static str] {
    match table {
        Table::Operations => &["correlation_id", "user_id", "user_login"],
        Table::Leavers => &[
            "user_id",
            "user_login",
            "correlation_ids.list.item",
            "disabled_by",
        ],
        Table::PostDisableActivity => &["user", "user_id", "correlation_id"],
    }
}

/// The text columns of names that repeat (apps, IdP actions): written by [`NameChunk`], as a
/// dictionary chunk.
fn repeated_names(table: Table) -> &'static [&'static str] {
    match table {
        Table::Operations => &["app", "action"],
        Table::Leavers => &["app", "clock_start", "initiated_by"],
        Table::PostDisableActivity => &["app", "method"],
    }
}

fn zstd_level() -> ZstdLevel {
    ZstdLevel::try_new(1).expect("1 is a valid zstd level")
}

/// Writes one batch as a Parquet file at `path`, atomically. On any error nothing is left.
pub fn write_file(path: &Path, table: Table, batch: &Columns) -> Result<(), AuditError> {
    let tmp = write_uncommitted(path, table, batch)?;
    durable::commit(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        AuditError::io(path, e)
    })
}

/// Writes one batch under `path`'s temporary name, synced but not yet visible. Returns the
/// temporary's path; [`durable::commit`] makes it visible.
pub fn write_uncommitted(
    path: &Path,
    table: Table,
    batch: &Columns,
) -> Result<PathBuf, AuditError> {
    let tmp = durable::tmp_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| AuditError::io(&tmp, e))?;
        let mut writer = TableWriter::new(file, table).map_err(parquet_error(&tmp))?;
        writer
            .write(batch, 0..batch.rows)
            .map_err(parquet_error(&tmp))?;
        let file = writer.finish().map_err(parquet_error(&tmp))?;
        file.sync_all().map_err(|e| AuditError::io(&tmp, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| tmp)
}

/// A file written but not yet made visible: the checkpoint records it before the rename, so a
/// crash in between is rolled forward at the next start (exactly once).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreparedFile {
    pub tmp: PathBuf,
    pub path: PathBuf,
    pub table: Table,
    pub rows: u64,
}

/// Makes prepared files visible (idempotent: an already renamed file is fine).
pub fn commit_prepared(files: &[PreparedFile]) -> Result<(), AuditError> {
    for file in files {
        if file.tmp.exists() {
            durable::commit(&file.tmp, &file.path).map_err(|e| AuditError::io(&file.path, e))?;
        } else if !file.path.exists() {
            return Err(AuditError::Corrupt {
                path: file.path.clone(),
                message:
                    "a file the checkpoint says was written is missing (and so is its temporary)"
                        .into(),
            });
        }
    }
    Ok(())
}

/// [`commit_prepared`], then the paths of the files now visible.
fn commit_files(files: Vec<PreparedFile>) -> Result<Vec<PathBuf>, AuditError> {
    commit_prepared(&files)?;
    Ok(files.into_iter().map(|p| p.path).collect())
}

/// The `operations` row of a judged operation, borrowed from it.
pub fn operation_view<'a>(
    op: &'a Operation,
    source_names: &'a [String],
    ingested_at: Ts,
) -> OperationView<'a> {
    OperationView {
        correlation_id: op.correlation_id.as_deref(),
        join_method: op.join_method.as_str(),
        stage: op.stage.as_str(),
        app: op.app.as_deref(),
        user_id: op.user_id.as_deref(),
        user_login: op.user_login.as_deref(),
        action: op.action.as_deref(),
        idp_source: op
            .idp_source
            .and_then(|i| source_names.get(i as usize))
            .map(String::as_str),
        idp_time: op.idp_time.map(|t| t.0),
        idp_status: op.idp_status.map(|s| s.as_str()),
        first_attempt_time: op.first_attempt_time.map(|t| t.0),
        last_attempt_time: op.last_attempt_time.map(|t| t.0),
        attempts: op.attempts.len().min(i32::MAX as usize) as i32,
        http_status: op.http_status.map(i32::from),
        method: op.method.map(|m| m.as_str()),
        path: op.path.as_deref(),
        outcome: op.outcome.as_str(),
        cause: op.cause.map(|c| c.as_str()),
        lag_ms: op.lag_ms,
        disagreement: op.disagreement,
        high_risk: op.high_risk,
        ingested_at: ingested_at.0,
    }
}

/// The day (since the epoch, UTC) a row's time falls on: its file's `date=` partition.
fn day_of(micros: i64) -> i64 {
    micros
        .div_euclid(crate::time::MICROS_PER_SEC)
        .div_euclid(86_400)
}

/// The `date=` partition of a day.
fn date_of_day(day: i64) -> String {
    Ts(day
        .saturating_mul(86_400)
        .saturating_mul(crate::time::MICROS_PER_SEC))
    .date()
}

/// The open episode a `state = open` row stands for, to carry on with (`replay --append`).
pub fn open_episode(row: &LeaverRow) -> Episode {
    Episode {
        app: row.app.clone(),
        user_id: row.user_id.clone(),
        user_login: row.user_login.clone(),
        initiated_at: Ts(row.initiated_at),
        first_attempt_at: row.first_attempt_at.map(Ts),
        disabled_at: None,
        high_risk: row.high_risk,
        deadline_seconds: u64::try_from(row.deadline_seconds).unwrap_or(0),
        correlation_ids: row.correlation_ids.clone(),
        state: EpisodeState::Open,
        // A row from before the store kept what started it (schema version 1): a return in
        // these logs leaves the episode alone.
        initiated_by: row
            .initiated_by
            .clone()
            .unwrap_or_else(|| "an earlier replay".into()),
        known_as: String::new(),
        by_source: row.clock_start.as_deref() == Some(ClockStart::UserTrigger.as_str()),
        started_by: row.clock_start.as_deref().and_then(ClockStart::parse),
        disabled_by: None,
        decided_on: None,
    }
}

/// The `post_disable_activity` row of a request made as a disabled user.
pub fn post_disable_row(activity: &PostDisableActivity) -> PostDisableRow {
    PostDisableRow {
        time: activity.time.0,
        app: activity.app.clone(),
        user: activity.user.clone(),
        user_id: activity.user_id.clone(),
        method: activity.method.clone(),
        path: activity.path.clone(),
        http_status: i32::from(activity.status),
        correlation_id: activity.correlation_id.clone(),
        disabled_at: activity.disabled_at.0,
    }
}

/// The `leavers` row of an episode: disabled ones, open ones as they stand at `as_of`
/// (`met_slo` false once past the deadline), and cancelled ones (a rehire while open: no
/// latency, no breach), whose row supersedes an `open` one written before (the daemon wrote
/// one past the deadline, and it stood as a breach in the store and in packs). The engine
/// hands on an open episode when it passes its deadline (the daemon), at the end of a replay,
/// and when a memory cap drops it.
pub fn leaver_row(episode: &Episode, as_of: Ts) -> LeaverRow {
    let breached = episode.breached(as_of);
    LeaverRow {
        app: episode.app.clone(),
        user_id: episode.user_id.clone(),
        user_login: episode.user_login.clone(),
        initiated_at: episode.initiated_at.0,
        first_attempt_at: episode.first_attempt_at.map(|t| t.0),
        disabled_at: episode.disabled_at.map(|t| t.0),
        latency_seconds: episode.latency_seconds(),
        high_risk: episode.high_risk,
        deadline_seconds: episode.deadline_seconds.min(i64::MAX as u64) as i64,
        met_slo: match episode.state {
            EpisodeState::Disabled => Some(!breached),
            EpisodeState::Open => breached.then_some(false),
            EpisodeState::Cancelled => None,
        },
        correlation_ids: episode.correlation_ids.clone(),
        state: match episode.state {
            EpisodeState::Open => "open",
            EpisodeState::Disabled => "disabled",
            EpisodeState::Cancelled => "cancelled",
        }
        .to_string(),
        clock_start: episode.clock_start().map(|c| c.as_str().to_string()),
        initiated_by: Some(episode.initiated_by.clone()),
        disabled_by: episode.disabled_by.clone(),
        // A closed row's state is final; only an open one depends on when it was judged.
        as_of: (episode.state == EpisodeState::Open).then_some(as_of.0),
    }
}

/// Writes one table's rows as a Parquet file, a row group at a time: coded columns through
/// [`CodedChunk`], IDs and logins through [`IdChunk`], apps and actions through
/// [`NameChunk`], the rest through parquet-rs's column writers. Schema, properties and footer
/// (with the Arrow schema) are `ArrowWriter`'s own; only those columns' pages are made here.
pub struct TableWriter<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    table: Table,
    /// The row group being filled: a column's encoder per column, none before its first row.
    group: Vec<ColumnEncoder>,
    group_rows: usize,
    groups_written: usize,
    /// The bytes each column's last [`IdChunk`] held (0 for the other columns): the next
    /// row group's chunk takes room for as many at once, rather than doubling up to it.
    id_bytes: Vec<usize>,
}

enum ColumnEncoder {
    /// Boxed: parquet-rs's writer is 1.5 KB, our chunks 32 to ~140 bytes.
    Arrow(Box<ArrowColumnWriter>),
    Coded(CodedChunk),
    Ids(IdChunk),
    Names(NameChunk),
}

impl<W: Write + Send> TableWriter<W> {
    pub fn new(sink: W, table: Table) -> Result<TableWriter<W>, ParquetError> {
        let (writer, factory) =
            ArrowWriter::try_new(sink, table.schema(), Some(properties(table)))?
                .into_serialized_writer()?;
        Ok(TableWriter {
            writer,
            factory,
            table,
            group: Vec::new(),
            group_rows: 0,
            groups_written: 0,
            id_bytes: Vec::new(),
        })
    }

    /// Adds `rows` of `batch`, closing each row group as it reaches [`ROW_GROUP_ROWS`].
    pub fn write(&mut self, batch: &Columns, rows: Range<usize>) -> Result<(), ParquetError> {
        let mut start = rows.start;
        while start < rows.end {
            let end = rows.end.min(start + ROW_GROUP_ROWS - self.group_rows);
            self.write_to_group(batch, start..end)?;
            start = end;
            if self.group_rows == ROW_GROUP_ROWS {
                self.flush_group()?;
            }
        }
        Ok(())
    }

    fn write_to_group(&mut self, batch: &Columns, rows: Range<usize>) -> Result<(), ParquetError> {
        let schema = self.table.schema();
        if batch.columns.len() != schema.fields().len() {
            return Err(ParquetError::General(format!(
                "a batch of {} columns for table {}, which has {}",
                batch.columns.len(),
                self.table.name(),
                schema.fields().len()
            )));
        }
        if self.group.is_empty() {
            let writers = self.factory.create_column_writers(self.groups_written)?;
            if writers.len() != schema.fields().len() {
                // Each of our columns is one Parquet leaf (the one list holds plain texts).
                return Err(ParquetError::General(format!(
                    "table {} has a column of several Parquet leaves",
                    self.table.name()
                )));
            }
            // parquet-rs makes a writer for every column (there is no asking for some): the
            // others' are dropped unused, once a row group.
            let (ids, names) = (distinct_texts(self.table), repeated_names(self.table));
            let id_bytes = &self.id_bytes;
            self.group = writers
                .into_iter()
                .zip(&batch.columns)
                .zip(schema.fields())
                .enumerate()
                .map(|(i, ((writer, column), field))| match column {
                    Column::Arrow(_) if ids.contains(&field.name().as_str()) => {
                        let bytes = id_bytes.get(i).copied().unwrap_or(0);
                        ColumnEncoder::Ids(IdChunk::with_capacity(bytes))
                    }
                    Column::Arrow(_) if names.contains(&field.name().as_str()) => {
                        ColumnEncoder::Names(NameChunk::default())
                    }
                    Column::Arrow(_) => ColumnEncoder::Arrow(Box::new(writer)),
                    Column::Coded(_) => ColumnEncoder::Coded(CodedChunk::default()),
                })
                .collect();
        }
        let columns = self.group.iter_mut().zip(&batch.columns);
        for ((encoder, column), field) in columns.zip(schema.fields()) {
            match (encoder, column) {
                (ColumnEncoder::Arrow(writer), Column::Arrow(array)) => {
                    let slice = array.slice(rows.start, rows.len());
                    for leaf in compute_leaves(field, &slice)? {
                        writer.write(&leaf)?;
                    }
                }
                (ColumnEncoder::Coded(chunk), Column::Coded(coded)) => {
                    chunk.extend(coded, rows.clone())
                }
                (ColumnEncoder::Ids(chunk), Column::Arrow(array)) => {
                    chunk.extend(strings(field, array)?, rows.clone())
                }
                (ColumnEncoder::Names(chunk), Column::Arrow(array)) => {
                    chunk.extend(strings(field, array)?, rows.clone())
                }
                _ => {
                    return Err(ParquetError::General(format!(
                        "column {} changed kind within a row group",
                        field.name()
                    )))
                }
            }
        }
        self.group_rows += rows.len();
        Ok(())
    }

    /// Writes the row group being filled, if it has rows.
    fn flush_group(&mut self) -> Result<(), ParquetError> {
        if self.group.is_empty() {
            return Ok(());
        }
        let encoders = std::mem::take(&mut self.group);
        self.id_bytes = encoders
            .iter()
            .map(|encoder| match encoder {
                ColumnEncoder::Ids(chunk) => chunk.bytes(),
                _ => 0,
            })
            .collect();
        let descriptors = self.writer.schema_descr().columns().to_vec();
        let mut group = self.writer.next_row_group()?;
        for (encoder, descriptor) in encoders.into_iter().zip(&descriptors) {
            let (bytes, close) = match encoder {
                ColumnEncoder::Arrow(writer) => {
                    writer.close()?.append_to_row_group(&mut group)?;
                    continue;
                }
                ColumnEncoder::Coded(chunk) => chunk.write(descriptor, zstd_level())?,
                ColumnEncoder::Ids(chunk) => chunk.write(descriptor, zstd_level())?,
                ColumnEncoder::Names(chunk) => chunk.write(descriptor, zstd_level())?,
            };
            group.append_column(&bytes, close)?;
        }
        group.close()?;
        self.group_rows = 0;
        self.groups_written += 1;
        Ok(())
    }

    /// Writes what is left and the footer; returns the sink.
    pub fn finish(mut self) -> Result<W, ParquetError> {
        self.flush_group()?;
        self.writer.into_inner()
    }
}

/// A column's array as strings, which the ID and names columns are.
fn strings<'a>(field: &Field, array: &'a ArrayRef) -> Result<&'a StringArray, ParquetError> {
    array.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
        ParquetError::General(format!(
            "column {} holds {}, not strings",
            field.name(),
            array.data_type()
        ))
    })
}

/// A Parquet file being written under its temporary name, a row group at a time.
struct OpenFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: TableWriter<File>,
    rows: u64,
}

/// Streams rows into atomically committed files: rows are buffered a few thousand at a time
/// ([`SPILL_ROWS`]) and written to the open file of their table and date, in row groups of
/// 64 Ki rows, so memory does not grow with `rows_per_file`. Nothing is visible until the
/// owner commits: `flush`, `commit_full` for the files that filled up, or `prepare` +
/// `commit_prepared` for the daemon's exactly-once checkpoints; `needs_flush` says when a file
/// is full and waiting.
pub struct AuditWriter {
    root: PathBuf,
    rows_per_file: usize,
    source_names: Vec<String>,
    /// Rows not yet written, by table and day.
    operations: BTreeMap<i64, OperationsBuilder>,
    leavers: BTreeMap<i64, Vec<LeaverRow>>,
    post_disable: BTreeMap<i64, Vec<PostDisableRow>>,
    open: BTreeMap<(Table, i64), OpenFile>,
    /// Files closed (full) but not yet handed to the owner.
    finished: Vec<PreparedFile>,
    file_prefix: String,
    sequence: u64,
    rows_written: BTreeMap<Table, u64>,
    /// The oldest and newest operation times among the rows added.
    operation_span: Option<(i64, i64)>,
}

fn parquet_error(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> AuditError + '_ {
    move |error| AuditError::Parquet {
        path: path.to_path_buf(),
        error,
    }
}

impl AuditWriter {
    /// Opens (creating) the store under `root`, removing temporaries a crash left behind.
    /// `file_prefix` makes this writer's file names unique (start time and process id).
    pub fn open(
        root: &Path,
        rows_per_file: usize,
        source_names: Vec<String>,
        file_prefix: String,
    ) -> Result<AuditWriter, AuditError> {
        for table in Table::ALL {
            let dir = root.join(table.name());
            durable::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
            durable::remove_leftovers(&dir).map_err(|e| AuditError::io(&dir, e))?;
        }
        Ok(AuditWriter {
            root: root.to_path_buf(),
            rows_per_file: rows_per_file.max(1),
            source_names,
            operations: BTreeMap::new(),
            leavers: BTreeMap::new(),
            post_disable: BTreeMap::new(),
            open: BTreeMap::new(),
            finished: Vec::new(),
            file_prefix,
            sequence: 0,
            rows_written: BTreeMap::new(),
            operation_span: None,
        })
    }

    /// Rows written so far, per table.
    pub fn rows_written(&self, table: Table) -> u64 {
        self.rows_written.get(&table).copied().unwrap_or(0)
    }

    /// The oldest and newest operation times among the rows added (an operation's time: its
    /// IdP record's, else its first attempt's).
    pub fn operation_span(&self) -> Option<(i64, i64)> {
        self.operation_span
    }

    /// Rows buffered in memory, not yet in a file.
    pub fn buffered(&self) -> usize {
        self.operations
            .values()
            .map(OperationsBuilder::len)
            .sum::<usize>()
            + self.leavers.values().map(Vec::len).sum::<usize>()
            + self.post_disable.values().map(Vec::len).sum::<usize>()
    }

    /// Adds what the engine produced. `as_of` judges episodes still open. A full row group is
    /// written to its file at once.
    pub fn add(&mut self, output: &Output, ingested_at: Ts, as_of: Ts) -> Result<(), AuditError> {
        match output {
            Output::Operation(op) => {
                let row = operation_view(op, &self.source_names, ingested_at);
                let time = row.time();
                let span = self
                    .operation_span
                    .map_or((time, time), |(from, to)| (from.min(time), to.max(time)));
                self.operation_span = Some(span);
                let day = day_of(time);
                let buffer = self.operations.entry(day).or_default();
                buffer.append(&row);
                if buffer.len() >= self.spill_rows() {
                    self.spill(Table::Operations, day)?;
                }
            }
            Output::Episode(episode) => self.add_leaver(leaver_row(episode, as_of))?,
            Output::PostDisable(activity) => {
                let row = post_disable_row(activity);
                let day = day_of(row.time);
                let buffer = self.post_disable.entry(day).or_default();
                buffer.push(row);
                if buffer.len() >= self.spill_rows() {
                    self.spill(Table::PostDisableActivity, day)?;
                }
            }
        }
        Ok(())
    }

    /// Adds a `leavers` row made elsewhere (an episode a replay carried over ended).
    pub fn add_leaver(&mut self, row: LeaverRow) -> Result<(), AuditError> {
        let day = day_of(row.initiated_at);
        let buffer = self.leavers.entry(day).or_default();
        buffer.push(row);
        if buffer.len() >= self.spill_rows() {
            self.spill(Table::Leavers, day)?;
        }
        Ok(())
    }

    /// Rows per write to the encoder: [`SPILL_ROWS`], or fewer when files are smaller.
    fn spill_rows(&self) -> usize {
        SPILL_ROWS.min(self.rows_per_file)
    }

    /// Writes the buffered rows of a table and day to its open file (opening one as needed,
    /// closing it once it holds `rows_per_file` rows). The rows leave the buffer before they
    /// are written: after an error the writer has lost them and must not be used again.
    fn spill(&mut self, table: Table, day: i64) -> Result<(), AuditError> {
        let batch = match table {
            Table::Operations => match self.operations.get_mut(&day) {
                Some(buffer) if !buffer.is_empty() => buffer.take(),
                _ => return Ok(()),
            },
            Table::Leavers => match self.leavers.get_mut(&day) {
                Some(rows) if !rows.is_empty() => schema::leavers_columns(&std::mem::take(rows)),
                _ => return Ok(()),
            },
            Table::PostDisableActivity => match self.post_disable.get_mut(&day) {
                Some(rows) if !rows.is_empty() => {
                    schema::post_disable_columns(&std::mem::take(rows))
                }
                _ => return Ok(()),
            },
        }
        .map_err(|e| AuditError::Corrupt {
            path: self.root.join(table.name()),
            message: e.to_string(),
        })?;
        let key = (table, day);
        let mut offset = 0;
        while offset < batch.rows {
            if !self.open.contains_key(&key) {
                let path = self.next_path(table, day)?;
                let tmp = durable::tmp_path(&path);
                let file = File::create(&tmp).map_err(|e| AuditError::io(&tmp, e))?;
                let writer = TableWriter::new(file, table).map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    parquet_error(&tmp)(e)
                })?;
                self.open.insert(
                    key,
                    OpenFile {
                        path,
                        tmp,
                        writer,
                        rows: 0,
                    },
                );
            }
            let open = self.open.get_mut(&key).expect("opened above");
            let room = self.rows_per_file - open.rows as usize;
            let take = room.min(batch.rows - offset);
            open.writer
                .write(&batch, offset..offset + take)
                .map_err(parquet_error(&open.tmp))?;
            open.rows += take as u64;
            offset += take;
            if open.rows as usize >= self.rows_per_file {
                self.close(&key)?;
            }
        }
        Ok(())
    }

    /// Finishes an open file (footer, fsync) and queues it for the owner to commit.
    fn close(&mut self, key: &(Table, i64)) -> Result<(), AuditError> {
        let Some(open) = self.open.remove(key) else {
            return Ok(());
        };
        let result = (|| {
            let file = open.writer.finish().map_err(parquet_error(&open.tmp))?;
            file.sync_all().map_err(|e| AuditError::io(&open.tmp, e))
        })();
        if let Err(error) = result {
            let _ = fs::remove_file(&open.tmp);
            return Err(error);
        }
        *self.rows_written.entry(key.0).or_default() += open.rows;
        self.finished.push(PreparedFile {
            tmp: open.tmp,
            path: open.path,
            table: key.0,
            rows: open.rows,
        });
        Ok(())
    }

    /// Whether a file is full and waiting to be committed.
    pub fn needs_flush(&self) -> bool {
        !self.finished.is_empty()
    }

    /// Makes the files that filled up visible, leaving the rest buffered or open (a replay
    /// commits each file as it fills; only its end flushes what remains).
    pub fn commit_full(&mut self) -> Result<Vec<PathBuf>, AuditError> {
        commit_files(std::mem::take(&mut self.finished))
    }

    /// Writes every buffer out and makes the files visible. Returns the files written.
    pub fn flush(&mut self) -> Result<Vec<PathBuf>, AuditError> {
        commit_files(self.prepare()?)
    }

    /// Writes every buffer out and closes every file, under temporary names (at most
    /// `rows_per_file` rows a file). Nothing is visible until [`commit_prepared`].
    pub fn prepare(&mut self) -> Result<Vec<PreparedFile>, AuditError> {
        let days: Vec<(Table, i64)> = self
            .operations
            .keys()
            .map(|&d| (Table::Operations, d))
            .chain(self.leavers.keys().map(|&d| (Table::Leavers, d)))
            .chain(
                self.post_disable
                    .keys()
                    .map(|&d| (Table::PostDisableActivity, d)),
            )
            .collect();
        for (table, day) in days {
            self.spill(table, day)?;
        }
        self.operations.clear();
        self.leavers.clear();
        self.post_disable.clear();
        let open: Vec<(Table, i64)> = self.open.keys().copied().collect();
        for key in open {
            self.close(&key)?;
        }
        Ok(std::mem::take(&mut self.finished))
    }

    fn next_path(&mut self, table: Table, day: i64) -> Result<PathBuf, AuditError> {
        let dir = self
            .root
            .join(table.name())
            .join(format!("date={}", date_of_day(day)));
        durable::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        self.sequence += 1;
        Ok(dir.join(format!("{}-{:06}.parquet", self.file_prefix, self.sequence)))
    }
}

impl Drop for AuditWriter {
    /// On an error path (a full disk, say), files never handed to the owner leave no
    /// temporaries behind.
    fn drop(&mut self) {
        for (_, open) in std::mem::take(&mut self.open) {
            drop(open.writer);
            let _ = fs::remove_file(&open.tmp);
        }
        for file in self.finished.drain(..) {
            let _ = fs::remove_file(&file.tmp);
        }
    }
}
