//! Criterion benchmarks of the deterministic core on the bundled example logs
//! (`examples/logs`, made by `scimwatch generate`): each parser, the join + judge (the
//! engine), and the alert conditions. Run: `cargo bench --bench core`.
//!
//! Whole-pipeline throughput against DuckDB is `scripts/bench-replay.sh`; live throughput is
//! `scripts/bench-live.sh`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use scimwatch::config::{Config, Role};
use scimwatch::engine::{Engine, EngineSettings};
use scimwatch::model::Record;
use scimwatch::parse::LineParser;
use std::hint::black_box;
use std::path::Path;

fn example() -> (Config, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let config = Config::load(&root.join("scimwatch.toml")).expect("example config");
    let lines = |name: &str| -> Vec<Vec<u8>> {
        std::fs::read(root.join("logs").join(name))
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

criterion_group!(benches, parsers, engine);
criterion_main!(benches);
