//! Criterion benchmarks of the deterministic core on the bundled example logs
//! (`examples/logs`, made by `scimwatch generate`): the IdP and gateway parsers, every vendor
//! preset's parsers (on `tests/fixtures/vendors`), the join alone, judging alone, and the
//! whole engine (join, judge, leaver episodes), and the `operations` table's Parquet encoding.
//! Run: `cargo bench --bench core`.
//!
//! Whole-pipeline throughput against DuckDB is `scripts/bench-replay.sh`; live throughput is
//! `scripts/bench-live.sh`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use parquet::arrow::ArrowWriter;
use scimwatch::audit::schema::{OperationsBuilder, Table};
use scimwatch::audit::writer::{operation_view, properties, TableWriter};
use scimwatch::config::{Config, Role};
use scimwatch::engine::{Engine, EngineSettings, Output};
use scimwatch::join::{Joined, Joiner};
use scimwatch::judge::judge;
use scimwatch::judge::Operation;
use scimwatch::model::Record;
use scimwatch::parse::LineParser;
use scimwatch::time::Ts;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

/// The example config and logs; `SCIMWATCH_BENCH_LOGS=DIR` takes `idp.jsonl` and
/// `gateway.log` from DIR instead (a set from `scimwatch generate`, e.g.
/// `target/bench-data/100000`), to see how a cost grows with the state.
fn example() -> (Config, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let config = Config::load(&root.join("scimwatch.toml")).expect("example config");
    let logs = std::env::var_os("SCIMWATCH_BENCH_LOGS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("logs"));
    let lines = |name: &str| -> Vec<Vec<u8>> {
        std::fs::read(logs.join(name))
            .expect("example logs")
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    (config, lines("idp.jsonl"), lines("gateway.log"))
}

fn parser(config: &Config, role: Role) -> LineParser {
    let (index, source) = config
        .sources
        .iter()
        .enumerate()
        .find(|(_, s)| s.role == role)
        .expect("a source of the role");
    LineParser::new(source, &config.apps, index as u16).expect("parser")
}

fn parsers(c: &mut Criterion) {
    let (config, idp, gateway) = example();
    for (name, role, lines) in [
        ("parse/idp_json", Role::Idp, &idp),
        ("parse/gateway_nginx_json", Role::Gateway, &gateway),
    ] {
        let parser = parser(&config, role);
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function("all example lines", |b| {
            b.iter(|| {
                for (n, line) in lines.iter().enumerate() {
                    let _ = black_box(parser.parse(black_box(line), 0, n as u64));
                }
            })
        });
        group.finish();
    }
}

/// Every vendor preset's sources on their fixture files, each source's lines read by its
/// parser: the per-line cost of each format (the fixtures are a few lines each, so these are
/// small, hot loops).
fn vendor_parsers(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vendors");
    let mut vendors: Vec<_> = std::fs::read_dir(&root)
        .expect("vendor fixtures")
        .map(|entry| entry.expect("a fixture").path())
        .collect();
    vendors.sort();
    for dir in vendors {
        let config = Config::load(&dir.join("scimwatch.toml")).expect("a vendor config");
        for (index, source) in config.sources.iter().enumerate() {
            let mut lines: Vec<Vec<u8>> = Vec::new();
            for pattern in &source.paths {
                let pattern = dir.join(pattern);
                for file in glob::glob(&pattern.to_string_lossy()).expect("a glob") {
                    let text = std::fs::read(file.expect("a path")).expect("a fixture log");
                    lines.extend(
                        text.split(|b| *b == b'\n')
                            .filter(|l| !l.is_empty())
                            .map(<[u8]>::to_vec),
                    );
                }
            }
            assert!(!lines.is_empty(), "{}: {}", dir.display(), source.name);
            let parser = LineParser::new(source, &config.apps, index as u16).expect("parser");
            let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
            let vendor = dir.file_name().expect("a name").to_string_lossy();
            let mut group = c.benchmark_group(format!("parse/{vendor}/{}", source.name));
            group.throughput(Throughput::Bytes(bytes as u64));
            group.measurement_time(Duration::from_secs(2));
            group.bench_function(format!("{} lines", lines.len()), |b| {
                b.iter(|| {
                    for (n, line) in lines.iter().enumerate() {
                        let _ = black_box(parser.parse(black_box(line), 0, n as u64));
                    }
                })
            });
            group.finish();
        }
    }
}

/// Every example record, merged by time as replay merges them.
fn records(config: &Config, idp: &[Vec<u8>], gateway: &[Vec<u8>]) -> Vec<Record> {
    let mut all = Vec::new();
    for (role, lines) in [(Role::Idp, idp), (Role::Gateway, gateway)] {
        let parser = parser(config, role);
        all.extend(
            lines
                .iter()
                .enumerate()
                .filter_map(|(n, l)| parser.parse(l, 0, n as u64).ok()),
        );
    }
    all.sort_by_key(Record::time);
    all
}

/// The join alone, fed as the engine feeds it: IdP records, notes and gateway writes in time
/// order, settling up to each record's time.
fn join_all(settings: &EngineSettings, records: Vec<Record>) -> Vec<Joined> {
    let mut joiner = Joiner::new(settings.join_window_secs, settings.gateway_cid_joins);
    let mut joined = Vec::new();
    for record in records {
        let time = record.time();
        match record {
            Record::Idp(idp) => joiner.push_idp(idp),
            Record::Gateway(gateway) if gateway.write.is_some() => joiner.push_gateway(gateway),
            Record::Note(note) => joiner.push_note(note),
            _ => {}
        }
        joiner.expire(time, &mut joined);
    }
    joiner.expire_all(&mut joined);
    joined
}

fn join_and_judge_apart(c: &mut Criterion) {
    let (config, idp, gateway) = example();
    let records = records(&config, &idp, &gateway);
    let settings = EngineSettings::from_config(&config);
    let mut group = c.benchmark_group("join");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("all example records", |b| {
        b.iter_batched(
            || records.clone(),
            |records| join_all(&settings, records).len(),
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let joined = join_all(&settings, records);
    let mut group = c.benchmark_group("judge");
    group.throughput(Throughput::Elements(joined.len() as u64));
    group.bench_function("every joined operation", |b| {
        b.iter_batched(
            || joined.clone(),
            |joined| {
                joined
                    .into_iter()
                    .map(|one| black_box(judge(one)).attempts.len())
                    .sum::<usize>()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn engine(c: &mut Criterion) {
    let (config, idp, gateway) = example();
    let records = records(&config, &idp, &gateway);
    let settings = EngineSettings::from_config(&config);
    let mut group = c.benchmark_group("engine/join_and_judge");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("all example records", |b| {
        b.iter_batched(
            || records.clone(),
            |records| {
                let mut engine = Engine::new(settings.clone());
                let mut outputs = 0usize;
                for record in records {
                    engine.ingest(record);
                    if let Some(watermark) = engine.watermark() {
                        engine.advance(watermark);
                    }
                    outputs += engine.drain().count();
                }
                engine.finish();
                outputs + engine.drain().count()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The daemon's overdue hold: while leavers are past their deadline and not yet decided, each
/// view (every 100 ms) asks whether a leaver operation still pending or waiting may have
/// disabled them in time. Here every record is pending (nothing settled), and ten leavers
/// are undecided: the cost per pending operation scales to the daemon's 1M.
fn overdue_hold(c: &mut Criterion) {
    let (config, idp, gateway) = example();
    let records = records(&config, &idp, &gateway);
    let undecided: Vec<(String, String)> = records
        .iter()
        .filter_map(|record| match record {
            Record::Idp(r) if r.stage == scimwatch::model::Stage::Leaver => Some((
                scimwatch::model::fold_case(r.app.as_deref()?).into_owned(),
                scimwatch::model::fold_case(r.user_login.as_deref()?).into_owned(),
            )),
            _ => None,
        })
        .step_by(97)
        .take(10)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let settings = EngineSettings {
        // A working day's records all still within the join window and the lateness.
        join_window_secs: 86_400,
        allowed_lateness_secs: 86_400,
        ..EngineSettings::from_config(&config)
    };
    let mut engine = Engine::new(settings);
    for record in records {
        engine.ingest(record);
    }
    let mut group = c.benchmark_group("engine/overdue_hold");
    group.throughput(Throughput::Elements(engine.join_pending() as u64));
    group.bench_function(
        format!(
            "{} undecided, {} pending operations",
            undecided.len(),
            engine.join_pending()
        ),
        |b| b.iter(|| black_box(engine.unseen_leavers(&undecided)).len()),
    );
    group.finish();
}

/// The `operations` table's Parquet encoding alone: the example's judged operations, repeated
/// to fill two row groups (each with an ID of its own), appended row by row and handed to the encoder 4,096 at a time as
/// the audit writer does, into memory (no file, no fsync).
fn parquet(c: &mut Criterion) {
    const ROWS: usize = 2 * 65_536;
    let (config, idp, gateway) = example();
    let mut engine = Engine::new(EngineSettings::from_config(&config));
    let mut operations: Vec<Operation> = Vec::new();
    let mut keep = |outputs: &mut dyn Iterator<Item = Output>| {
        operations.extend(outputs.filter_map(|output| match output {
            Output::Operation(op) => Some(*op),
            _ => None,
        }))
    };
    for record in records(&config, &idp, &gateway) {
        engine.ingest(record);
        if let Some(watermark) = engine.watermark() {
            engine.advance(watermark);
        }
        keep(&mut engine.drain());
    }
    engine.finish();
    keep(&mut engine.drain());
    // Each row its own correlation ID, as in a real store: cycling the example's 1,543 would
    // hand zstd the same IDs again and again.
    let operations: Vec<Operation> = (0..ROWS)
        .map(|i| {
            let mut op = operations[i % operations.len()].clone();
            let mixed = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            op.correlation_id = Some(format!("{mixed:016x}{:016x}", mixed.rotate_left(29)));
            op
        })
        .collect();
    let sources: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let mut group = c.benchmark_group("audit/parquet");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function(format!("{ROWS} operations rows"), |b| {
        b.iter(|| {
            let mut writer = TableWriter::new(Vec::new(), Table::Operations).expect("writer");
            let mut builder = OperationsBuilder::default();
            for (i, op) in operations.iter().enumerate() {
                builder.append(&operation_view(op, &sources, Ts(0)));
                if builder.len() == 4_096 || i + 1 == ROWS {
                    let batch = builder.take().expect("a batch");
                    writer.write(&batch, 0..batch.rows).expect("written");
                }
            }
            writer.finish().expect("a file").len()
        })
    });
    // The same rows with every column parquet-rs's, the coded ones turned back into strings
    // (which the writer before the coded columns did not need to do, so this overstates their
    // saving a little).
    group.bench_function(
        format!("{ROWS} operations rows, all through ArrowWriter"),
        |b| {
            b.iter(|| {
                let mut writer = ArrowWriter::try_new(
                    Vec::new(),
                    Table::Operations.schema(),
                    Some(properties(Table::Operations)),
                )
                .expect("writer");
                let mut builder = OperationsBuilder::default();
                for (i, op) in operations.iter().enumerate() {
                    builder.append(&operation_view(op, &sources, Ts(0)));
                    if builder.len() == 4_096 || i + 1 == ROWS {
                        writer
                            .write(&builder.finish().expect("a batch"))
                            .expect("written");
                    }
                }
                writer.into_inner().expect("a file").len()
            })
        },
    );
    group.finish();
}

criterion_group!(
    benches,
    parsers,
    vendor_parsers,
    join_and_judge_apart,
    engine,
    overdue_hold,
    parquet
);
criterion_main!(benches);
