//! The two audit tables: their rows, their Arrow schemas, and conversion both ways.
//!
//! Timestamps are microseconds, timezone UTC (readers restore `TIMESTAMP WITH TIME ZONE`; Spark
//! maps micros with isAdjustedToUTC to `TimestampType`); integers are signed. Each file's
//! key-value metadata carries the schema version and the producer.

use super::coded::{Coded, CodedBuilder, TooManyTexts};
use crate::join::JoinMethod;
use crate::model::{Cause, IdpStatus, Method, Outcome, Stage};
use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, PrimitiveBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, PrimitiveArray, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, LazyLock};

/// Bumped whenever a column changes meaning or type. 2: `leavers.met_slo` is null while an
/// open episode is still inside its deadline (it was true), and `leavers` gained `clock_start`,
/// `initiated_by`, `disabled_by` and `as_of` (null in rows from version 1 files).
pub const SCHEMA_VERSION: &str = "2";

/// The `leavers` columns version 1 files lack: read as null from those.
const LEAVERS_SINCE_2: [&str; 4] = ["clock_start", "initiated_by", "disabled_by", "as_of"];

/// Who wrote a file.
pub fn producer() -> String {
    format!("scimwatch {}", env!("CARGO_PKG_VERSION"))
}

/// The tables.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Operations,
    Leavers,
    /// Requests made as a user after their account was disabled (since schema version 2).
    PostDisableActivity,
}

impl Table {
    pub const ALL: [Table; 3] = [
        Table::Operations,
        Table::Leavers,
        Table::PostDisableActivity,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Table::Operations => "operations",
            Table::Leavers => "leavers",
            Table::PostDisableActivity => "post_disable_activity",
        }
    }
    /// The tables' directories in a store, as a message names them:
    /// "operations/, leavers/ and post_disable_activity/".
    pub fn store_dirs() -> String {
        let dirs: Vec<String> = Table::ALL
            .iter()
            .map(|t| format!("{}/", t.name()))
            .collect();
        match dirs.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => dirs.concat(),
        }
    }
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Operations => OPERATIONS_SCHEMA.clone(),
            Table::Leavers => LEAVERS_SCHEMA.clone(),
            Table::PostDisableActivity => POST_DISABLE_SCHEMA.clone(),
        }
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static OPERATIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("correlation_id", DataType::Utf8, true),
        Field::new("join_method", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("app", DataType::Utf8, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("user_login", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
        Field::new("idp_source", DataType::Utf8, true),
        Field::new("idp_time", timestamp(), true),
        Field::new("idp_status", DataType::Utf8, true),
        Field::new("first_attempt_time", timestamp(), true),
        Field::new("last_attempt_time", timestamp(), true),
        Field::new("attempts", DataType::Int32, false),
        Field::new("http_status", DataType::Int32, true),
        Field::new("method", DataType::Utf8, true),
        Field::new("path", DataType::Utf8, true),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("cause", DataType::Utf8, true),
        Field::new("lag_ms", DataType::Int64, true),
        Field::new("disagreement", DataType::Boolean, false),
        Field::new("high_risk", DataType::Boolean, false),
        Field::new("ingested_at", timestamp(), false),
    ]))
});

static LEAVERS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("app", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("user_login", DataType::Utf8, true),
        Field::new("initiated_at", timestamp(), false),
        Field::new("first_attempt_at", timestamp(), true),
        Field::new("disabled_at", timestamp(), true),
        Field::new("latency_seconds", DataType::Float64, true),
        Field::new("high_risk", DataType::Boolean, false),
        Field::new("deadline_seconds", DataType::Int64, false),
        Field::new("met_slo", DataType::Boolean, true),
        Field::new(
            "correlation_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("state", DataType::Utf8, false),
        Field::new("clock_start", DataType::Utf8, true),
        Field::new("initiated_by", DataType::Utf8, true),
        Field::new("disabled_by", DataType::Utf8, true),
        Field::new("as_of", timestamp(), true),
    ]))
});

static POST_DISABLE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp(), false),
        Field::new("app", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("method", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("http_status", DataType::Int32, false),
        Field::new("correlation_id", DataType::Utf8, true),
        Field::new("disabled_at", timestamp(), false),
    ]))
});

/// One row of `post_disable_activity`: a request made as a user after their account in the
/// app was disabled (clarification 13). Field order is the sort order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PostDisableRow {
    pub time: i64,
    pub app: String,
    /// The login when known, else the user ID (clarification 12).
    pub user: String,
    pub user_id: Option<String>,
    pub method: String,
    /// Secrets in the query, fragment and URI redacted at parse time.
    pub path: String,
    pub http_status: i32,
    pub correlation_id: Option<String>,
    pub disabled_at: i64,
}

/// Arrow columns of `post_disable_activity` rows.
pub fn post_disable_columns(rows: &[PostDisableRow]) -> Result<Columns, ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        times(rows.iter().map(|r| Some(r.time))),
        strings(rows.iter().map(|r| Some(r.app.as_str()))),
        strings(rows.iter().map(|r| Some(r.user.as_str()))),
        strings(rows.iter().map(|r| r.user_id.as_deref())),
        strings(rows.iter().map(|r| Some(r.method.as_str()))),
        strings(rows.iter().map(|r| Some(r.path.as_str()))),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.http_status))
                .collect::<arrow_array::Int32Array>(),
        ),
        strings(rows.iter().map(|r| r.correlation_id.as_deref())),
        times(rows.iter().map(|r| Some(r.disabled_at))),
    ];
    RecordBatch::try_new(Table::PostDisableActivity.schema(), columns)
        .map(|batch| Columns::from_batch(&batch))
}

/// Reads `post_disable_activity` rows back from a batch.
pub fn post_disable_rows(batch: &RecordBatch) -> Result<Vec<PostDisableRow>, SchemaMismatch> {
    check_schema(batch, Table::PostDisableActivity)?;
    let c = |name| column(batch, name);
    let status = c("http_status").as_primitive::<Int32Type>();
    Ok((0..batch.num_rows())
        .map(|i| PostDisableRow {
            time: opt_i64::<TimestampMicrosecondType>(c("time"), i).unwrap_or(0),
            app: opt_string(c("app"), i).unwrap_or_default(),
            user: opt_string(c("user"), i).unwrap_or_default(),
            user_id: opt_string(c("user_id"), i),
            method: opt_string(c("method"), i).unwrap_or_default(),
            path: opt_string(c("path"), i).unwrap_or_default(),
            http_status: status.value(i),
            correlation_id: opt_string(c("correlation_id"), i),
            disabled_at: opt_i64::<TimestampMicrosecondType>(c("disabled_at"), i).unwrap_or(0),
        })
        .collect())
}

/// One row of `operations`. Field order is the sort order after the row's time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OperationRow {
    pub correlation_id: Option<String>,
    pub join_method: String,
    pub stage: String,
    pub app: Option<String>,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    pub action: Option<String>,
    pub idp_source: Option<String>,
    pub idp_time: Option<i64>,
    pub idp_status: Option<String>,
    pub first_attempt_time: Option<i64>,
    pub last_attempt_time: Option<i64>,
    pub attempts: i32,
    pub http_status: Option<i32>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub outcome: String,
    pub cause: Option<String>,
    pub lag_ms: Option<i64>,
    pub disagreement: bool,
    pub high_risk: bool,
    pub ingested_at: i64,
}

/// One row of `leavers`: an episode disabled, or still open when it was written (at the end of
/// a replay, or by the daemon once past its deadline).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub struct LeaverRow {
    pub app: String,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    pub initiated_at: i64,
    pub first_attempt_at: Option<i64>,
    pub disabled_at: Option<i64>,
    pub latency_seconds: Option<f64>,
    pub high_risk: bool,
    pub deadline_seconds: i64,
    /// Disabled within the deadline; false once past it still open; null while an open
    /// episode is inside it (and for a cancelled one: no latency, no breach).
    pub met_slo: Option<bool>,
    pub correlation_ids: Vec<String>,
    pub state: String,
    /// What started the clock ([`crate::judge::ClockStart`]).
    pub clock_start: Option<String>,
    /// The trigger's event, the IdP's action, or `trigger_time`.
    pub initiated_by: Option<String>,
    /// The correlation ID of the operation whose 2xx disabled it.
    pub disabled_by: Option<String>,
    /// For an `open` row, the event time it was judged at (still open then); null for a
    /// closed one, whose state is final.
    pub as_of: Option<i64>,
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn times(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

/// One `operations` row, borrowed: what [`OperationsBuilder`] appends. The writer builds it
/// straight from a judged operation, so a row costs no allocation of its own.
#[derive(Debug, Clone, Copy)]
pub struct OperationView<'a> {
    pub correlation_id: Option<&'a str>,
    pub join_method: &'a str,
    pub stage: &'a str,
    pub app: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub user_login: Option<&'a str>,
    pub action: Option<&'a str>,
    pub idp_source: Option<&'a str>,
    pub idp_time: Option<i64>,
    pub idp_status: Option<&'a str>,
    pub first_attempt_time: Option<i64>,
    pub last_attempt_time: Option<i64>,
    pub attempts: i32,
    pub http_status: Option<i32>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub outcome: &'a str,
    pub cause: Option<&'a str>,
    pub lag_ms: Option<i64>,
    pub disagreement: bool,
    pub high_risk: bool,
    pub ingested_at: i64,
}

impl OperationRow {
    /// The operation's time (its earliest IdP record, else its first attempt), in micros.
    pub fn time(&self) -> i64 {
        self.view().time()
    }

    pub fn view(&self) -> OperationView<'_> {
        OperationView {
            correlation_id: self.correlation_id.as_deref(),
            join_method: &self.join_method,
            stage: &self.stage,
            app: self.app.as_deref(),
            user_id: self.user_id.as_deref(),
            user_login: self.user_login.as_deref(),
            action: self.action.as_deref(),
            idp_source: self.idp_source.as_deref(),
            idp_time: self.idp_time,
            idp_status: self.idp_status.as_deref(),
            first_attempt_time: self.first_attempt_time,
            last_attempt_time: self.last_attempt_time,
            attempts: self.attempts,
            http_status: self.http_status,
            method: self.method.as_deref(),
            path: self.path.as_deref(),
            outcome: &self.outcome,
            cause: self.cause.as_deref(),
            lag_ms: self.lag_ms,
            disagreement: self.disagreement,
            high_risk: self.high_risk,
            ingested_at: self.ingested_at,
        }
    }
}

impl OperationView<'_> {
    /// The operation's time (its earliest IdP record, else its first attempt), in micros:
    /// which day's file the row goes to.
    pub fn time(&self) -> i64 {
        self.idp_time.or(self.first_attempt_time).unwrap_or(0)
    }
}

/// Column builders of the `operations` table: rows are appended one by one and taken out as a
/// batch, with no per-row allocation. The columns whose texts come from the engine's enums
/// (and the IdP source's name) are coded ([`super::coded`]).
#[derive(Debug)]
pub struct OperationsBuilder {
    correlation_id: StringBuilder,
    join_method: CodedBuilder,
    stage: CodedBuilder,
    app: StringBuilder,
    user_id: StringBuilder,
    user_login: StringBuilder,
    action: StringBuilder,
    idp_source: CodedBuilder,
    idp_time: TimestampMicrosecondBuilder,
    idp_status: CodedBuilder,
    first_attempt_time: TimestampMicrosecondBuilder,
    last_attempt_time: TimestampMicrosecondBuilder,
    attempts: Int32Builder,
    http_status: Int32Builder,
    method: CodedBuilder,
    path: StringBuilder,
    outcome: CodedBuilder,
    cause: CodedBuilder,
    lag_ms: Int64Builder,
    disagreement: BooleanBuilder,
    high_risk: BooleanBuilder,
    ingested_at: TimestampMicrosecondBuilder,
    len: usize,
}

impl OperationsBuilder {
    pub fn append(&mut self, row: &OperationView) {
        self.correlation_id.append_option(row.correlation_id);
        self.join_method.append(Some(row.join_method));
        self.stage.append(Some(row.stage));
        self.app.append_option(row.app);
        self.user_id.append_option(row.user_id);
        self.user_login.append_option(row.user_login);
        self.action.append_option(row.action);
        self.idp_source.append(row.idp_source);
        self.idp_time.append_option(row.idp_time);
        self.idp_status.append(row.idp_status);
        self.first_attempt_time
            .append_option(row.first_attempt_time);
        self.last_attempt_time.append_option(row.last_attempt_time);
        self.attempts.append_value(row.attempts);
        self.http_status.append_option(row.http_status);
        self.method.append(row.method);
        self.path.append_option(row.path);
        self.outcome.append(Some(row.outcome));
        self.cause.append(row.cause);
        self.lag_ms.append_option(row.lag_ms);
        self.disagreement.append_value(row.disagreement);
        self.high_risk.append_value(row.high_risk);
        self.ingested_at.append_value(row.ingested_at);
        self.len += 1;
    }

    /// Rows appended since the last [`OperationsBuilder::finish`].
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the rows appended so far out as a batch, leaving the builder empty but with room
    /// for as many rows and bytes again: the next batch is most likely the same size, and
    /// growing each column from nothing by doubling copied it ~17 times a batch (0.5% of a
    /// replay's instructions, in `realloc`).
    pub fn take(&mut self) -> Result<Columns, ArrowError> {
        fn text(builder: &mut StringBuilder, rows: usize) -> Column {
            let array = builder.finish();
            *builder = StringBuilder::with_capacity(rows, array.value_data().len());
            Column::Arrow(Arc::new(array))
        }
        fn coded(builder: &mut CodedBuilder) -> Column {
            Column::Coded(
                builder
                    .finish()
                    .expect("no coded column overflowed: checked above"),
            )
        }
        fn number<T: arrow_array::types::ArrowPrimitiveType>(
            builder: &mut PrimitiveBuilder<T>,
            rows: usize,
        ) -> PrimitiveArray<T> {
            let array = builder.finish();
            *builder = PrimitiveBuilder::with_capacity(rows);
            array
        }
        fn utc(builder: &mut TimestampMicrosecondBuilder, rows: usize) -> Column {
            Column::Arrow(Arc::new(number(builder, rows).with_timezone("UTC")))
        }
        fn count<T: arrow_array::types::ArrowPrimitiveType>(
            builder: &mut PrimitiveBuilder<T>,
            rows: usize,
        ) -> Column {
            Column::Arrow(Arc::new(number(builder, rows)))
        }
        fn flag(builder: &mut BooleanBuilder, rows: usize) -> Column {
            let array = builder.finish();
            *builder = BooleanBuilder::with_capacity(rows);
            Column::Arrow(Arc::new(array))
        }
        // Checked before anything is taken, so that an error leaves every column as it was.
        let coded_columns = [
            (&self.join_method, "join_method"),
            (&self.stage, "stage"),
            (&self.idp_source, "idp_source"),
            (&self.idp_status, "idp_status"),
            (&self.method, "method"),
            (&self.outcome, "outcome"),
            (&self.cause, "cause"),
        ];
        if let Some((_, name)) = coded_columns.iter().find(|(c, _)| c.overflowed()) {
            return Err(ArrowError::InvalidArgumentError(format!(
                "column {name}: {TooManyTexts}"
            )));
        }
        let rows = std::mem::take(&mut self.len);
        let columns = vec![
            text(&mut self.correlation_id, rows),
            coded(&mut self.join_method),
            coded(&mut self.stage),
            text(&mut self.app, rows),
            text(&mut self.user_id, rows),
            text(&mut self.user_login, rows),
            text(&mut self.action, rows),
            coded(&mut self.idp_source),
            utc(&mut self.idp_time, rows),
            coded(&mut self.idp_status),
            utc(&mut self.first_attempt_time, rows),
            utc(&mut self.last_attempt_time, rows),
            count(&mut self.attempts, rows),
            count(&mut self.http_status, rows),
            coded(&mut self.method),
            text(&mut self.path, rows),
            coded(&mut self.outcome),
            coded(&mut self.cause),
            count(&mut self.lag_ms, rows),
            flag(&mut self.disagreement, rows),
            flag(&mut self.high_risk, rows),
            utc(&mut self.ingested_at, rows),
        ];
        Ok(Columns { rows, columns })
    }

    /// [`OperationsBuilder::take`] as an Arrow batch.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.take()?.into_batch(Table::Operations)
    }
}

impl Default for OperationsBuilder {
    fn default() -> OperationsBuilder {
        OperationsBuilder {
            correlation_id: StringBuilder::new(),
            join_method: CodedBuilder::new(JoinMethod::ALL.map(JoinMethod::as_str)),
            stage: CodedBuilder::new(Stage::ALL.map(Stage::as_str)),
            app: StringBuilder::new(),
            user_id: StringBuilder::new(),
            user_login: StringBuilder::new(),
            action: StringBuilder::new(),
            idp_source: CodedBuilder::default(),
            idp_time: TimestampMicrosecondBuilder::new(),
            idp_status: CodedBuilder::new(IdpStatus::ALL.map(IdpStatus::as_str)),
            first_attempt_time: TimestampMicrosecondBuilder::new(),
            last_attempt_time: TimestampMicrosecondBuilder::new(),
            attempts: Int32Builder::new(),
            http_status: Int32Builder::new(),
            method: CodedBuilder::new(Method::ALL.map(Method::as_str)),
            path: StringBuilder::new(),
            outcome: CodedBuilder::new(Outcome::ALL.map(Outcome::as_str)),
            cause: CodedBuilder::new(Cause::ALL.map(Cause::as_str)),
            lag_ms: Int64Builder::new(),
            disagreement: BooleanBuilder::new(),
            high_risk: BooleanBuilder::new(),
            ingested_at: TimestampMicrosecondBuilder::new(),
            len: 0,
        }
    }
}

/// A batch of one table's rows as the writer takes them: a column is an Arrow array or, for
/// the coded ones, codes into a list of texts.
#[derive(Debug, Clone)]
pub struct Columns {
    pub rows: usize,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone)]
pub enum Column {
    Arrow(ArrayRef),
    Coded(Coded),
}

impl Columns {
    fn from_batch(batch: &RecordBatch) -> Columns {
        Columns {
            rows: batch.num_rows(),
            columns: batch.columns().iter().cloned().map(Column::Arrow).collect(),
        }
    }

    /// The batch with its coded columns as Arrow strings.
    pub fn into_batch(self, table: Table) -> Result<RecordBatch, ArrowError> {
        let columns = self
            .columns
            .into_iter()
            .map(|column| match column {
                Column::Arrow(array) => array,
                Column::Coded(coded) => coded.to_array(),
            })
            .collect();
        RecordBatch::try_new(table.schema(), columns)
    }
}

/// Builds a batch of `operations` rows.
pub fn operations_columns(rows: &[OperationRow]) -> Result<Columns, ArrowError> {
    let mut builder = OperationsBuilder::default();
    for row in rows {
        builder.append(&row.view());
    }
    builder.take()
}

/// Builds a batch of `leavers` rows.
pub fn leavers_columns(rows: &[LeaverRow]) -> Result<Columns, ArrowError> {
    let mut ids = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for id in &row.correlation_ids {
            ids.values().append_value(id);
        }
        ids.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|r| Some(r.app.as_str()))),
        strings(rows.iter().map(|r| r.user_id.as_deref())),
        strings(rows.iter().map(|r| r.user_login.as_deref())),
        times(rows.iter().map(|r| Some(r.initiated_at))),
        times(rows.iter().map(|r| r.first_attempt_at)),
        times(rows.iter().map(|r| r.disabled_at)),
        Arc::new(
            rows.iter()
                .map(|r| r.latency_seconds)
                .collect::<Float64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.high_risk))
                .collect::<BooleanArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.deadline_seconds))
                .collect::<Int64Array>(),
        ),
        Arc::new(rows.iter().map(|r| r.met_slo).collect::<BooleanArray>()),
        Arc::new(ids.finish()),
        strings(rows.iter().map(|r| Some(r.state.as_str()))),
        strings(rows.iter().map(|r| r.clock_start.as_deref())),
        strings(rows.iter().map(|r| r.initiated_by.as_deref())),
        strings(rows.iter().map(|r| r.disabled_by.as_deref())),
        times(rows.iter().map(|r| r.as_of)),
    ];
    // The list builder names its item field "item", nullable, as the schema says.
    RecordBatch::try_new(Table::Leavers.schema(), columns).map(|batch| Columns::from_batch(&batch))
}

/// Why a file is not one of our tables.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SchemaMismatch(pub String);

fn check_schema(batch: &RecordBatch, table: Table) -> Result<(), SchemaMismatch> {
    let expected = table.schema();
    let actual = batch.schema();
    for field in expected.fields() {
        let added_later =
            table == Table::Leavers && LEAVERS_SINCE_2.contains(&field.name().as_str());
        match actual.field_with_name(field.name()) {
            Err(_) if added_later => {}
            Ok(found) if found.data_type() == field.data_type() => {}
            Ok(found) => {
                return Err(SchemaMismatch(format!(
                    "column {} is {}, expected {}",
                    field.name(),
                    found.data_type(),
                    field.data_type()
                )))
            }
            Err(_) => return Err(SchemaMismatch(format!("no column {}", field.name()))),
        }
    }
    Ok(())
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    let index = batch.schema().index_of(name).expect("schema checked");
    batch.column(index)
}

/// A column version 1 files lack ([`LEAVERS_SINCE_2`]): `None` in those.
fn later_column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a ArrayRef> {
    let index = batch.schema().index_of(name).ok()?;
    Some(batch.column(index))
}

fn opt_string(array: &ArrayRef, i: usize) -> Option<String> {
    let strings = array.as_string::<i32>();
    (!strings.is_null(i)).then(|| strings.value(i).to_string())
}

fn opt_i64<T: arrow_array::ArrowPrimitiveType<Native = i64>>(
    array: &ArrayRef,
    i: usize,
) -> Option<i64> {
    let values = array.as_primitive::<T>();
    (!values.is_null(i)).then(|| values.value(i))
}

/// Reads `operations` rows back from a batch.
pub fn operations_rows(batch: &RecordBatch) -> Result<Vec<OperationRow>, SchemaMismatch> {
    check_schema(batch, Table::Operations)?;
    let c = |name| column(batch, name);
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let attempts = c("attempts").as_primitive::<Int32Type>();
        let http = c("http_status").as_primitive::<Int32Type>();
        rows.push(OperationRow {
            correlation_id: opt_string(c("correlation_id"), i),
            join_method: opt_string(c("join_method"), i).unwrap_or_default(),
            stage: opt_string(c("stage"), i).unwrap_or_default(),
            app: opt_string(c("app"), i),
            user_id: opt_string(c("user_id"), i),
            user_login: opt_string(c("user_login"), i),
            action: opt_string(c("action"), i),
            idp_source: opt_string(c("idp_source"), i),
            idp_time: opt_i64::<TimestampMicrosecondType>(c("idp_time"), i),
            idp_status: opt_string(c("idp_status"), i),
            first_attempt_time: opt_i64::<TimestampMicrosecondType>(c("first_attempt_time"), i),
            last_attempt_time: opt_i64::<TimestampMicrosecondType>(c("last_attempt_time"), i),
            attempts: attempts.value(i),
            http_status: (!http.is_null(i)).then(|| http.value(i)),
            method: opt_string(c("method"), i),
            path: opt_string(c("path"), i),
            outcome: opt_string(c("outcome"), i).unwrap_or_default(),
            cause: opt_string(c("cause"), i),
            lag_ms: opt_i64::<Int64Type>(c("lag_ms"), i),
            disagreement: c("disagreement").as_boolean().value(i),
            high_risk: c("high_risk").as_boolean().value(i),
            ingested_at: opt_i64::<TimestampMicrosecondType>(c("ingested_at"), i).unwrap_or(0),
        });
    }
    Ok(rows)
}

/// Reads `leavers` rows back from a batch.
pub fn leavers_rows(batch: &RecordBatch) -> Result<Vec<LeaverRow>, SchemaMismatch> {
    check_schema(batch, Table::Leavers)?;
    let c = |name| column(batch, name);
    let later = |name| later_column(batch, name);
    // Version 1 wrote `met_slo` true for an open episode still in time: read as version 2
    // says it, undecided (null), so a pack of version 2 never shows it as disabled in time.
    let version_1 = later("as_of").is_none();
    let mut rows = Vec::with_capacity(batch.num_rows());
    let lists = c("correlation_ids").as_list::<i32>();
    for i in 0..batch.num_rows() {
        let latency = c("latency_seconds").as_primitive::<Float64Type>();
        let ids = lists.value(i);
        let ids = ids.as_string::<i32>();
        rows.push(LeaverRow {
            app: opt_string(c("app"), i).unwrap_or_default(),
            user_id: opt_string(c("user_id"), i),
            user_login: opt_string(c("user_login"), i),
            initiated_at: opt_i64::<TimestampMicrosecondType>(c("initiated_at"), i).unwrap_or(0),
            first_attempt_at: opt_i64::<TimestampMicrosecondType>(c("first_attempt_at"), i),
            disabled_at: opt_i64::<TimestampMicrosecondType>(c("disabled_at"), i),
            latency_seconds: (!latency.is_null(i)).then(|| latency.value(i)),
            high_risk: c("high_risk").as_boolean().value(i),
            deadline_seconds: opt_i64::<Int64Type>(c("deadline_seconds"), i).unwrap_or(0),
            met_slo: match (!c("met_slo").is_null(i)).then(|| c("met_slo").as_boolean().value(i)) {
                Some(true) if version_1 && opt_string(c("state"), i).as_deref() == Some("open") => {
                    None
                }
                met_slo => met_slo,
            },
            correlation_ids: (0..ids.len()).map(|j| ids.value(j).to_string()).collect(),
            state: opt_string(c("state"), i).unwrap_or_default(),
            clock_start: later("clock_start").and_then(|a| opt_string(a, i)),
            initiated_by: later("initiated_by").and_then(|a| opt_string(a, i)),
            disabled_by: later("disabled_by").and_then(|a| opt_string(a, i)),
            as_of: later("as_of").and_then(|a| opt_i64::<TimestampMicrosecondType>(a, i)),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: i64, full: bool) -> OperationRow {
        let text = |s: &str| full.then(|| format!("{s}-{n}"));
        OperationRow {
            correlation_id: text("cid"),
            join_method: "correlation_id".into(),
            stage: ["joiner", "mover", "leaver"][n as usize % 3].into(),
            app: text("app"),
            user_id: text("u"),
            user_login: text("user@corp.example"),
            action: text("create"),
            idp_source: text("okta"),
            idp_time: full.then_some(n * 1_000),
            idp_status: text("success"),
            first_attempt_time: full.then_some(n * 1_000 + 5),
            last_attempt_time: full.then_some(n * 1_000 + 9),
            attempts: n as i32,
            http_status: full.then_some(200 + n as i32),
            method: text("POST"),
            path: text("/scim/v2/Users"),
            outcome: "success".into(),
            cause: text("cause"),
            lag_ms: full.then_some(n),
            disagreement: n % 2 == 0,
            high_risk: full,
            ingested_at: n,
        }
    }

    #[test]
    fn a_builder_reused_after_finish_gives_each_batch_its_own_rows() {
        // A batch of long values, then a batch of nulls and a longer one: the room kept from
        // one batch never carries values into the next.
        let batches: [Vec<OperationRow>; 3] = [
            (0..50).map(|n| row(n, true)).collect(),
            (50..53).map(|n| row(n, n % 2 == 0)).collect(),
            (53..200).map(|n| row(n, n % 3 != 0)).collect(),
        ];
        let mut builder = OperationsBuilder::default();
        for rows in &batches {
            for row in rows {
                builder.append(&row.view());
            }
            assert_eq!(builder.len(), rows.len());
            let batch = builder.finish().expect("a batch");
            assert!(builder.is_empty());
            assert_eq!(&operations_rows(&batch).expect("rows"), rows);
        }
    }

    #[test]
    fn a_coded_column_past_its_limit_fails_the_batch_and_takes_nothing() {
        let mut builder = OperationsBuilder::default();
        let rows: Vec<OperationRow> = (0..=super::super::coded::MAX_TEXTS as i64)
            .map(|n| OperationRow {
                cause: Some(format!("cause-{n}")),
                ..row(n, false)
            })
            .collect();
        for row in &rows {
            builder.append(&row.view());
        }
        let error = builder.take().expect_err("too many causes").to_string();
        assert!(error.contains("column cause"), "{error}");
        assert_eq!(builder.len(), rows.len(), "every column keeps its rows");
    }

    /// A `leavers` batch of schema version 1 (no clock_start … as_of) reads with those null,
    /// and its open episode still in time, which version 1 wrote as met_slo true, reads as
    /// version 2 says it: undecided. A breached open row and a disabled one keep theirs.
    #[test]
    fn leavers_of_schema_version_1_read_as_version_2_says() {
        let leaver = |state: &str, met_slo: bool| LeaverRow {
            app: "vault".into(),
            user_id: None,
            user_login: Some("a@x".into()),
            initiated_at: 0,
            first_attempt_at: None,
            disabled_at: (state == "disabled").then_some(5_000_000),
            latency_seconds: (state == "disabled").then_some(5.0),
            high_risk: true,
            deadline_seconds: 900,
            met_slo: Some(met_slo),
            correlation_ids: vec![],
            state: state.into(),
            clock_start: None,
            initiated_by: None,
            disabled_by: None,
            as_of: None,
        };
        let rows = [
            leaver("open", true),
            leaver("open", false),
            leaver("disabled", true),
        ];
        let batch = leavers_columns(&rows)
            .unwrap()
            .into_batch(Table::Leavers)
            .unwrap();
        let v2 = leavers_rows(&batch).unwrap();
        assert_eq!(
            v2[0].met_slo,
            Some(true),
            "a version 2 batch is read as written"
        );
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| !LEAVERS_SINCE_2.contains(&batch.schema().field(i).name().as_str()))
            .collect();
        let v1 = leavers_rows(&batch.project(&keep).unwrap()).unwrap();
        let read: Vec<_> = v1.iter().map(|r| (r.state.as_str(), r.met_slo)).collect();
        assert_eq!(
            read,
            [
                ("open", None),
                ("open", Some(false)),
                ("disabled", Some(true))
            ]
        );
        assert!(v1
            .iter()
            .all(|r| r.clock_start.is_none() && r.as_of.is_none()));
    }
}
