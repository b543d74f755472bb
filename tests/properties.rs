//! Properties of the core, checked over many generated cases (a seeded generator, so a
//! failure names the seed that reproduces it):
//! - the report does not depend on how the sources' lines interleave, as long as no line
//!   arrives more than the allowed lateness behind the newest one;
//! - no input bytes make any parser or the engine panic.

use scimwatch::config::Config;
use scimwatch::engine::{Engine, EngineSettings};
use scimwatch::model::Record;
use scimwatch::parse::LineParser;
use scimwatch::replay::{replay, ReplayOptions};
use scimwatch::report::ReportBuilder;
use std::path::Path;

/// xorshift64*: small, deterministic, good enough to shuffle test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn fixture_config() -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/core");
    Config::load(&dir.join("scimwatch.toml")).unwrap()
}

fn parsers(config: &Config) -> Vec<LineParser> {
    config
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| LineParser::new(s, &config.apps, i as u16).unwrap())
        .collect()
}

/// Every record of every source file, with its source's file id set like replay does.
fn all_records(config: &Config) -> Vec<Record> {
    let parsers = parsers(config);
    let mut records = Vec::new();
    for (index, source) in config.sources.iter().enumerate() {
        for pattern in config.source_globs(source) {
            for path in glob::glob(&pattern).unwrap().flatten() {
                let bytes = std::fs::read(&path).unwrap();
                for (number, line) in bytes.split(|b| *b == b'\n').enumerate() {
                    if line.is_empty() {
                        continue;
                    }
                    if let Ok(record) = parsers[index].parse(line, index as u32, number as u64 + 1)
                    {
                        records.push(record);
                    }
                }
            }
        }
    }
    records
}

#[test]
fn the_report_does_not_depend_on_how_lines_interleave_within_the_allowed_lateness() {
    let config = fixture_config();
    let (reference, stats) = replay(&config, &ReplayOptions::default(), |_, _| Ok(())).unwrap();
    let records = all_records(&config);
    let lateness = config.slo.allowed_lateness_secs as i64 * 1_000_000;
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        // Each line arrives up to `lateness` after its own time: any such order is possible.
        let mut arrivals: Vec<(i64, u64, &Record)> = records
            .iter()
            .map(|r| {
                (
                    r.time().0 + rng.below(lateness as u64) as i64,
                    rng.next(),
                    r,
                )
            })
            .collect();
        arrivals.sort_by_key(|(arrival, tiebreak, _)| (*arrival, *tiebreak));
        let mut engine = Engine::new(EngineSettings::from_config(&config));
        let mut builder = ReportBuilder::new(&config.slo);
        for (_, _, record) in arrivals {
            engine.ingest((*record).clone());
            engine.advance(engine.watermark().unwrap());
            engine.drain().for_each(|o| builder.add(&o));
        }
        engine.finish();
        engine.drain().for_each(|o| builder.add(&o));
        let report = builder.build(engine.watermark(), &stats, engine.join_stats());
        assert_eq!(report, reference, "seed {seed} changed the report");
    }
}

fn mutate(rng: &mut Rng, line: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !out.is_empty() => {
                let at = rng.below(out.len() as u64) as usize;
                out[at] = rng.next() as u8;
            }
            1 if !out.is_empty() => out.truncate(rng.below(out.len() as u64) as usize),
            2 => {
                let at = rng.below(out.len() as u64 + 1) as usize;
                let piece: &[u8] = [
                    &b"\""[..],
                    b"{",
                    b"}",
                    b"[",
                    b"\\",
                    b"\\u00",
                    b":",
                    b",",
                    b"null",
                    b"-1e999",
                    b"\xf0\x9f",
                ][rng.below(11) as usize];
                out.splice(at..at, piece.iter().copied());
            }
            3 => out = (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            4 => {
                // Extreme but well-formed times.
                let text = String::from_utf8_lossy(&out).replace(
                    "2026-07-01",
                    ["0001-01-01", "9999-12-31", "1970-01-01"][rng.below(3) as usize],
                );
                out = text.into_bytes();
            }
            _ => {}
        }
    }
    out
}

#[test]
fn no_bytes_make_a_parser_or_the_engine_panic() {
    let config = fixture_config();
    let mut parsers = parsers(&config);
    // The regex presets too.
    let extra = r#"
[[source]]
name = "idp"
role = "idp"
format = "regex"
pattern = '^(?P<time>\S+) (?P<action>\S+) (?P<correlation_id>\S+) (?P<status>\S+)$'
[[source]]
name = "combined"
role = "gateway"
format = "nginx_combined"
[[source]]
name = "njson"
role = "gateway"
format = "nginx_json"
[[source]]
name = "okta"
role = "idp"
format = "okta"
[[source]]
name = "entra"
role = "idp"
format = "entra"
[[source]]
name = "trail-idp"
role = "idp"
format = "cloudtrail"
[[source]]
name = "trail-gw"
role = "gateway"
format = "cloudtrail"
[[source]]
name = "envoy"
role = "gateway"
format = "envoy"
[[source]]
name = "kong"
role = "gateway"
format = "kong"
[[source]]
name = "apigw"
role = "gateway"
format = "aws_apigw"
"#;
    let extra_config = Config::from_toml(extra, Path::new(".")).unwrap();
    for (i, source) in extra_config.sources.iter().enumerate() {
        parsers.push(LineParser::new(source, &extra_config.apps, (10 + i) as u16).unwrap());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/core");
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for file in ["idp.jsonl", "gateway.jsonl", "hr.jsonl"] {
        corpus.extend(
            std::fs::read(dir.join(file))
                .unwrap()
                .split(|b| *b == b'\n')
                .map(<[u8]>::to_vec),
        );
    }
    // Every vendor fixture line, so each preset sees its own shape mutated.
    for vendor in std::fs::read_dir(dir.join("../vendors")).unwrap() {
        for file in std::fs::read_dir(vendor.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                continue;
            }
            corpus.extend(
                std::fs::read(&path)
                    .unwrap()
                    .split(|b| *b == b'\n')
                    .map(<[u8]>::to_vec),
            );
        }
    }
    corpus.push(br#"203.0.113.7 - u [03/Mar/2025:10:41:11 +0000] "PATCH /scim/v2/Users/u-1 HTTP/1.1" 200 1 "-" "-""#.to_vec());
    corpus.push(b"2026-07-01T10:00:00Z create c-1 success".to_vec());
    for seed in 1..=6000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut engine = Engine::new(EngineSettings::from_config(&config));
        for _ in 0..8 {
            let base = &corpus[rng.below(corpus.len() as u64) as usize];
            let line = mutate(&mut rng, base);
            for parser in &parsers {
                if let Ok(record) = parser.parse(&line, 0, 1) {
                    engine.ingest(record);
                    engine.advance(engine.watermark().unwrap());
                }
            }
        }
        engine.finish();
        let mut builder = ReportBuilder::new(&config.slo);
        engine.drain().for_each(|o| builder.add(&o));
        let report = builder.build(engine.watermark(), &Default::default(), engine.join_stats());
        serde_json::to_string(&report).unwrap();
        scimwatch::report::text::render(&report);
    }
}
