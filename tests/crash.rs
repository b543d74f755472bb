//! The crash test: live traffic is appended and rotated (rename and copytruncate) while the
//! real daemon is `kill -9`ed three times and restarted. Afterwards its Parquet tables must
//! equal what `replay` writes for the same files: nothing lost, nothing twice.

mod common;

use common::daemon::Setup;
use scimwatch::audit::schema::{LeaverRow, OperationRow};
use scimwatch::demo::traffic::{generate, TrafficSpec};
use scimwatch::time::{parse_time, TimeFormat, Ts};
use std::io::Write;
use std::time::Duration;

fn config() -> String {
    scimwatch::demo::live::DEMO_CONFIG
        .replace("listen = \"127.0.0.1:9898\"", "listen = \"127.0.0.1:0\"")
        .replace("poll_interval_ms = 200", "poll_interval_ms = 50")
        .replace(
            "checkpoint_interval_secs = 2",
            "checkpoint_interval_secs = 1",
        )
        .replace("join_window_secs = 5", "join_window_secs = 2")
        // The writer sleeps until each line's time; on a loaded machine it falls behind, and
        // a line later than the allowed lateness is judged as late (the daemon's clock has
        // moved on), where replay sees every line: 8 s keeps a starved writer on time (1 s
        // once failed while another process loaded both cores).
        .replace("allowed_lateness_secs = 1", "allowed_lateness_secs = 8")
        .replace("disable_within_secs = 20", "disable_within_secs = 3600")
}

struct Timed {
    time: Ts,
    gateway: bool,
    line: String,
}

fn traffic(start: Ts) -> Vec<Timed> {
    let spec = TrafficSpec {
        seed: 11,
        start,
        operations: 1200,
        mean_gap_secs: 0.01,
        users: 300,
        trouble: false,
        ..TrafficSpec::default()
    };
    let (mut idp, mut gateway) = (Vec::new(), Vec::new());
    generate(&spec, &mut idp, &mut gateway).unwrap();
    let mut lines = Vec::new();
    for (bytes, is_gateway) in [(idp, false), (gateway, true)] {
        for line in String::from_utf8(bytes).unwrap().lines() {
            let key = if is_gateway {
                "\"time\":\""
            } else {
                "\"ts\":\""
            };
            let at = line.find(key).unwrap() + key.len();
            let end = at + line[at..].find('"').unwrap();
            let time = parse_time(&line[at..end], TimeFormat::Rfc3339).unwrap();
            lines.push(Timed {
                time,
                gateway: is_gateway,
                line: line.to_string(),
            });
        }
    }
    lines.sort_by_key(|l| l.time);
    lines
}

/// A row as a comparable key, without `ingested_at` (wall time of the writer).
fn operation_key(row: &OperationRow) -> String {
    let mut row = row.clone();
    row.ingested_at = 0;
    format!("{row:?}")
}

fn leaver_key(row: &LeaverRow) -> String {
    format!("{row:?}")
}

#[test]
fn kill_9_while_appending_and_rotating_loses_and_duplicates_nothing() {
    let setup = Setup::new(&config());
    let start = Ts(scimwatch::daemon::wall_clock().0 + 300_000);
    let lines = traffic(start);
    let total = lines.len();
    let logs = setup.path("logs");
    let writer = std::thread::spawn(move || {
        let mut gateway_lines = 0;
        for (index, timed) in lines.into_iter().enumerate() {
            let now = scimwatch::daemon::wall_clock();
            if timed.time > now {
                std::thread::sleep(Duration::from_micros((timed.time.0 - now.0) as u64));
            }
            if timed.gateway {
                gateway_lines += 1;
                if gateway_lines % 400 == 0 {
                    std::fs::rename(
                        logs.join("gateway.log"),
                        logs.join(format!("gateway.log.{}", gateway_lines / 400)),
                    )
                    .unwrap();
                }
            }
            if index == total / 2 {
                // copytruncate: the IdP log is copied aside and emptied in place.
                std::fs::copy(logs.join("idp.jsonl"), logs.join("idp.jsonl.1")).unwrap();
                std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(logs.join("idp.jsonl"))
                    .unwrap();
            }
            let name = if timed.gateway {
                "gateway.log"
            } else {
                "idp.jsonl"
            };
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join(name))
                .unwrap();
            writeln!(file, "{}", timed.line).unwrap();
        }
    });
    // Kill at three moments, once staying down for a while as lines keep coming.
    let mut daemon = setup.start();
    for (up_ms, down_ms) in [(1500u64, 0u64), (2500, 700), (3000, 0)] {
        std::thread::sleep(Duration::from_millis(up_ms));
        daemon.kill9();
        std::thread::sleep(Duration::from_millis(down_ms));
        daemon = setup.start();
    }
    writer.join().unwrap();

    // What replay writes for the same files.
    let replayed = setup.path("replayed");
    common::daemon::replay_into(&setup.config(), &replayed);
    let expected_ops: Vec<OperationRow> =
        common::daemon::read_dir_rows(&replayed.join("operations"));
    let expected_leavers: Vec<LeaverRow> =
        common::daemon::read_dir_leavers(&replayed.join("leavers"));
    assert!(
        expected_ops.len() > 1000,
        "the traffic made {} operations",
        expected_ops.len()
    );

    setup.wait_for(Duration::from_secs(30), |rows| {
        rows.len() >= expected_ops.len()
    });
    assert_eq!(daemon.stop(), Some(0));
    let mut got: Vec<String> = setup.operations().iter().map(operation_key).collect();
    let mut want: Vec<String> = expected_ops.iter().map(operation_key).collect();
    got.sort();
    want.sort();
    let missing: Vec<&String> = want.iter().filter(|k| !got.contains(k)).take(3).collect();
    let extra: Vec<&String> = got.iter().filter(|k| !want.contains(k)).take(3).collect();
    // KEEP=1 keeps the directory (logs, both stores, daemon.log) for a post-mortem.
    if std::env::var("KEEP").is_ok() {
        let kept = setup.dir.path().to_path_buf();
        std::mem::forget(setup.dir);
        panic!("kept {}", kept.display());
    }
    assert_eq!(
        got.len(),
        want.len(),
        "row counts differ; missing {missing:#?}\nextra {extra:#?}\n{}",
        setup.daemon_log()
    );
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    let mut got: Vec<String> = setup.leavers().iter().map(leaver_key).collect();
    // The replay also writes the episodes still open, in time, at its end; the daemon, which
    // has no end, writes an open one only once it is overdue.
    let mut want: Vec<String> = expected_leavers
        .iter()
        .filter(|row| row.state != "open" || row.met_slo == Some(false))
        .map(leaver_key)
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let log = setup.daemon_log();
    assert_eq!(
        log.matches("Resuming from checkpoint").count(),
        3,
        "three restarts resumed: {log}"
    );
}
