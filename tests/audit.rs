//! The Parquet evidence store and the quarterly pack: written by the real binary, read back by
//! our code and by DuckDB (an independent reader installed by `make test`), atomic under
//! crashes, deterministic, tamper-evident, and free of secrets.

mod common;

use common::{bin, fixture, replay_json, run};
use scimwatch::audit::export::{read_leavers, read_operations};
use scimwatch::audit::schema::{operations_columns, OperationRow, Table};
use scimwatch::audit::writer::write_file;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `replay --format json` of the example config on `idp` and `gateway` into the store
/// `store`, appending to it when `append`.
fn replay_example(idp: &Path, gateway: &Path, store: &Path, append: bool) -> std::process::Output {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scimwatch.toml");
    let mut command = bin();
    command
        .args(["replay", "--format", "json", "--config"])
        .arg(&config)
        .arg("--idp")
        .arg(idp)
        .arg("--gateway")
        .arg(gateway)
        .arg("--parquet")
        .arg(store);
    if append {
        command.arg("--append");
    }
    command.output().unwrap()
}

fn python() -> PathBuf {
    match std::env::var_os("SCIMWATCH_TEST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

/// Runs DuckDB over a store (tests/python/read_parquet.py); `make test` installs it.
fn duckdb_read(data: &Path) -> Value {
    duckdb_script("read_parquet.py", data)
}

/// Runs a DuckDB script of tests/python over a store and reads the JSON it prints.
fn duckdb_script(name: &str, data: &Path) -> Value {
    duckdb_run(name, &[data.to_str().unwrap()])
}

/// Runs a DuckDB script of tests/python with `args` and reads the JSON it prints.
fn duckdb_run(name: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name);
    let output = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run `make deps` to install DuckDB",
                python().display()
            )
        });
    assert!(
        output.status.success(),
        "DuckDB failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn replay_to_parquet(data: &Path) -> Value {
    let data = data.to_str().unwrap();
    replay_json(&fixture("core/scimwatch.toml"), &["--parquet", data])
}

/// A store that already holds files is refused (the same logs again would count every row
/// twice), naming the directory and `--append`; with `--append` the rows are added.
#[test]
fn a_replay_into_a_store_with_files_is_refused_unless_appending() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    replay_to_parquet(&data);
    let before = parquet_files(&data);
    let config = fixture("core/scimwatch.toml");
    let again = |extra: &[&str]| {
        bin()
            .args(["replay", "--format", "json", "--config"])
            .arg(&config)
            .arg("--parquet")
            .arg(&data)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = again(&[]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(data.to_str().unwrap())
            && stderr.contains(&format!("already holds {} Parquet file", before.len()))
            && stderr.contains("--append"),
        "{stderr}"
    );
    assert_eq!(parquet_files(&data), before, "nothing written when refused");
    // The same logs again, appended: their operations overlap the store's, so they are
    // refused and nothing is written (QA helper-30: overlapping monthly logs doubled a pack's
    // operations, silently; helper-57: and cancelled an open leaver the store carried over).
    let overlapping = again(&["--append"]);
    assert_eq!(overlapping.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&overlapping.stderr);
    assert!(
        stderr.contains(
            "these logs' operations (2026-07-01T09:00:00Z to 2026-07-01T10:10:00Z) do not come \
             after the store's (2026-07-01T09:00:00Z to 2026-07-01T10:10:00Z)"
        ) && stderr.contains("Nothing was written")
            && stderr.contains("--allow-overlap"),
        "{stderr}"
    );
    assert!(
        overlapping.stdout.is_empty(),
        "no report for a refused replay"
    );
    assert_eq!(parquet_files(&data), before, "its files taken out again");
    let appended = again(&["--append", "--allow-overlap"]);
    assert!(
        appended.status.success(),
        "{}",
        String::from_utf8_lossy(&appended.stderr)
    );
    assert_eq!(parquet_files(&data).len(), 2 * before.len());
    let stderr = String::from_utf8_lossy(&appended.stderr);
    assert!(
        stderr.contains("do not come after the store's")
            && stderr.contains("as --allow-overlap asks"),
        "{stderr}"
    );
    // --append means nothing without --parquet.
    let usage = run(&["replay", "--config", config.to_str().unwrap(), "--append"]);
    assert_eq!(usage.status.code(), Some(2));
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in walk(dir) {
        if entry.extension().is_some_and(|e| e == "parquet") {
            files.push(entry);
        }
    }
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn replay_writes_every_table_partitioned_by_date_and_our_reader_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let report = replay_to_parquet(dir.path());
    let files = parquet_files(dir.path());
    // operations, leavers, and alice's post-disable request.
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files
        .iter()
        .all(|f| f.parent().unwrap().file_name().unwrap() == "date=2026-07-01"));
    let operations: Vec<_> = files
        .iter()
        .filter(|f| f.to_string_lossy().contains("/operations/"))
        .flat_map(|f| read_operations(f).unwrap())
        .collect();
    let stages: u64 = ["joiner", "mover", "leaver"]
        .iter()
        .map(|s| report["stages"][s]["operations"].as_u64().unwrap())
        .sum();
    let expected =
        stages + report["skipped"].as_u64().unwrap() + report["unattributed"].as_u64().unwrap();
    assert_eq!(
        operations.len() as u64,
        expected,
        "one row per operation, skipped and unattributed included"
    );
    let bob = operations
        .iter()
        .find(|r| r.correlation_id.as_deref() == Some("l-bob-2"))
        .unwrap();
    assert_eq!(
        (
            bob.stage.as_str(),
            bob.outcome.as_str(),
            bob.http_status,
            bob.high_risk
        ),
        ("leaver", "succeeded", Some(200), true)
    );
    assert_eq!(bob.idp_source.as_deref(), Some("orchestrator"));
    let leavers: Vec<_> = files
        .iter()
        .filter(|f| f.to_string_lossy().contains("/leavers/"))
        .flat_map(|f| read_leavers(f).unwrap())
        .collect();
    // Six disabled episodes and dave, still open past his deadline; no row for cancelled ones.
    assert_eq!(leavers.len(), 7);
    let dave = leavers
        .iter()
        .find(|r| r.user_login.as_deref() == Some("dave@corp.example"))
        .unwrap();
    assert_eq!(
        (dave.state.as_str(), dave.met_slo, dave.disabled_at),
        ("open", Some(false), None)
    );
}

#[test]
fn duckdb_reads_both_tables_with_utc_timestamps_and_the_reports_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let report = replay_to_parquet(dir.path());
    let read = duckdb_read(dir.path());
    for (table, columns) in [
        (
            "operations",
            &[
                "idp_time",
                "first_attempt_time",
                "last_attempt_time",
                "ingested_at",
            ][..],
        ),
        (
            "leavers",
            &["initiated_at", "first_attempt_at", "disabled_at", "as_of"][..],
        ),
    ] {
        for column in columns {
            assert_eq!(
                read[table]["types"][column], "TIMESTAMP WITH TIME ZONE",
                "{table}.{column}"
            );
        }
    }
    assert_eq!(read["operations"]["types"]["attempts"], "INTEGER");
    assert_eq!(read["operations"]["types"]["lag_ms"], "BIGINT");
    assert_eq!(read["leavers"]["types"]["correlation_ids"], "VARCHAR[]");
    assert_eq!(read["leavers"]["types"]["latency_seconds"], "DOUBLE");
    assert_eq!(read["operations"]["rows"], 24);
    assert_eq!(read["leavers"]["rows"], 7);
    // alice's token still calling aws-prod 17 minutes after her disable: evidence too.
    assert_eq!(read["post_disable_activity"]["rows"], 1);
    for (column, kind) in [
        ("time", "TIMESTAMP WITH TIME ZONE"),
        ("disabled_at", "TIMESTAMP WITH TIME ZONE"),
        ("http_status", "INTEGER"),
        ("user", "VARCHAR"),
    ] {
        assert_eq!(
            read["post_disable_activity"]["types"][column], kind,
            "{column}"
        );
    }
    assert_eq!(
        read["post_disable_activity"]["strings"],
        json!([
            "/api/v1/instances?access_token=[REDACTED]",
            "GET",
            "alice@corp.example",
            "aws-prod",
            "req-2"
        ])
    );
    // The report's stage counts, recomputed by DuckDB from the rows.
    for stage in ["joiner", "mover", "leaver"] {
        for outcome in ["succeeded", "failed", "unconfirmed"] {
            let rows = read["stage_outcomes"][format!("{stage}/{outcome}")]
                .as_u64()
                .unwrap_or(0);
            assert_eq!(
                rows,
                report["stages"][stage][outcome].as_u64().unwrap(),
                "{stage}/{outcome}"
            );
        }
    }
    let m429 = &read["operation_samples"]["m-429"];
    assert_eq!(
        (m429["outcome"].as_str(), m429["attempts"].as_u64()),
        (Some("succeeded"), Some(3))
    );
    assert_eq!(read["operation_samples"]["j-401"]["cause"], "unauthorized");
    assert_eq!(
        read["operation_samples"]["m-unconfirmed"]["http_status"],
        Value::Null
    );
    assert_eq!(
        read["operation_samples"]["l-bob-2"]["idp_time"],
        "2026-07-01 09:42:00+00:00"
    );
    let bob = read["leaver_rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == "bob@corp.example")
        .unwrap();
    assert_eq!(bob["latency_seconds"], 1320.0);
    assert_eq!(bob["met_slo"], false);
    // Where the clock started and which operation's 2xx stopped it; a closed row's state is
    // final, so it has no as_of.
    assert_eq!(
        (
            &bob["clock_start"],
            &bob["initiated_by"],
            &bob["disabled_by"],
            &bob["as_of"]
        ),
        (
            &json!("operation"),
            &json!("deactivate"),
            &json!("l-bob-2"),
            &Value::Null
        )
    );
    assert_eq!(read["leavers"]["types"]["clock_start"], "VARCHAR");
    // dave, still open past his deadline at the replay's end: judged at its as_of.
    let dave = read["leaver_rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == "dave@corp.example")
        .unwrap();
    assert_eq!(
        (&dave["state"], &dave["met_slo"]),
        (&json!("open"), &json!(false))
    );
    // DuckDB prints the report's `as_of` (whole seconds here) its own way.
    let as_of = report["as_of"].as_str().unwrap();
    assert_eq!(
        dave["as_of"],
        as_of.replace('T', " ").replace('Z', "+00:00"),
        "{as_of}"
    );
    assert_eq!(bob["correlation_ids"], json!(["l-bob-1", "l-bob-2"]));
}

#[test]
fn the_readme_duckdb_query_lists_the_leavers_who_missed_the_slo() {
    let dir = tempfile::tempdir().unwrap();
    replay_to_parquet(dir.path());
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let query = readme
        .lines()
        .find(|l| l.contains("duckdb.sql(") && l.contains("met_slo"))
        .expect("README has the auditor's DuckDB one-liner");
    let command = query
        .trim()
        .trim_start_matches("$ ")
        .replace("python3", &python().to_string_lossy());
    let output = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(dir.path().join(".."))
        .env("DATA", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{command}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for user in [
        "carol@corp.example",
        "bob@corp.example",
        "dave@corp.example",
    ] {
        assert!(text.contains(user), "{user} missing from:\n{text}");
    }
    assert!(
        !text.contains("alice@corp.example"),
        "alice met the SLO:\n{text}"
    );
}

#[test]
fn secrets_planted_in_the_logs_never_reach_parquet() {
    let dir = tempfile::tempdir().unwrap();
    replay_to_parquet(dir.path());
    let secrets = ["Sup3rSecret!", "tok_live_998877", "tok_live_112233"];
    // The raw bytes (statistics and metadata are not compressed)…
    for file in parquet_files(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {}",
                file.display()
            );
        }
    }
    // …and every decoded string value.
    let read = duckdb_read(dir.path());
    let strings = format!(
        "{}{}{}",
        read["operations"]["strings"],
        read["leavers"]["strings"],
        read["post_disable_activity"]["strings"]
    );
    for secret in secrets {
        assert!(
            !strings.contains(secret),
            "{secret} decoded from the tables"
        );
    }
    assert!(
        strings.contains("access_token=[REDACTED]"),
        "the redacted path is kept: {strings}"
    );
    assert!(
        read["post_disable_activity"]["strings"]
            .to_string()
            .contains("/api/v1/instances?access_token=[REDACTED]"),
        "{read:#}"
    );
}

#[test]
fn a_crashed_write_leaves_no_visible_partial_file_and_is_cleaned_at_start() {
    let dir = tempfile::tempdir().unwrap();
    replay_to_parquet(dir.path());
    // A writer killed mid-file leaves only its temporary: half of a real file under the
    // temporary name a reader's glob skips.
    let committed = parquet_files(dir.path())[0].clone();
    let bytes = std::fs::read(&committed).unwrap();
    let partial = committed.with_file_name(".replay-crashed-000009.parquet.tmp");
    std::fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(
        duckdb_read(dir.path())["operations"]["rows"],
        24,
        "DuckDB's glob does not see it"
    );
    // The next writer to open the store removes it (the same logs again: overlapping).
    let data = dir.path().to_str().unwrap();
    replay_json(
        &fixture("core/scimwatch.toml"),
        &["--parquet", data, "--append", "--allow-overlap"],
    );
    assert!(!partial.exists());
    assert!(walk(dir.path()).iter().all(|p| !p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .ends_with(".tmp")));
}

/// A second writer on a store in use stops with a clear error and touches nothing: without the
/// lock it would sweep the first one's temporaries away as crash leftovers.
#[test]
fn a_store_in_use_by_another_scimwatch_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let held = scimwatch::durable::DirLock::acquire(dir.path()).unwrap();
    let live_tmp = dir
        .path()
        .join("operations/date=2026-07-01/.part-live-000001.parquet.tmp");
    std::fs::create_dir_all(live_tmp.parent().unwrap()).unwrap();
    std::fs::write(&live_tmp, b"being written").unwrap();
    let out = bin()
        .args(["replay", "--config"])
        .arg(fixture("core/scimwatch.toml"))
        .arg("--parquet")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another scimwatch"), "{stderr}");
    assert!(
        live_tmp.exists(),
        "the other writer's temporary is untouched"
    );
    assert!(parquet_files(dir.path()).is_empty());
    drop(held);
    replay_to_parquet(dir.path());
    assert!(
        !live_tmp.exists(),
        "once free, leftovers are swept as before"
    );
}

#[test]
fn a_real_kill_9_mid_write_never_leaves_a_partial_parquet_file() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let generated = run(&[
        "generate",
        "--out",
        logs.to_str().unwrap(),
        "--operations",
        "60000",
    ]);
    assert!(generated.status.success());
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scimwatch.toml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("scimwatch.toml"), config).unwrap();
    let mut seen_files = 0;
    for (attempt, delay_ms) in [150u64, 400, 900, 1600].into_iter().enumerate() {
        let data = dir.path().join(format!("data-{attempt}"));
        let mut child = bin()
            .args([
                "replay",
                "--config",
                dir.path().join("scimwatch.toml").to_str().unwrap(),
                "--format",
                "json",
                "--rows-per-file",
                "500",
                "--parquet",
                data.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Whatever the moment, every visible file is a whole, readable Parquet file.
        for file in parquet_files(&data) {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // a temporary: invisible to readers, removed at the next start
            }
            seen_files += 1;
            if file.to_string_lossy().contains("/operations/") {
                assert!(
                    !read_operations(&file).unwrap().is_empty(),
                    "{}",
                    file.display()
                );
            } else {
                read_leavers(&file).unwrap();
            }
        }
    }
    eprintln!("checked {seen_files} committed files across 4 kills");
}

/// One `operations` row whose coded columns (stage, outcome, cause, method, IdP status and
/// source, join method) take the `i`th value of shapes chosen to reach every case of their
/// encoding: alternating values (bit-packed), runs just under and over eight (where a repeat
/// must first fill a bit-packed group), runs of thousands, a row group of nothing but nulls, a
/// list of one text (indexes of zero bits), and texts none of the enums has.
fn shaped_row(i: usize) -> OperationRow {
    const STAGES: [&str; 3] = ["joiner", "mover", "leaver"];
    const OUTCOMES: [&str; 5] = [
        "succeeded",
        "failed",
        "unconfirmed",
        "skipped",
        "unattributed",
    ];
    let second_group = i >= 65_536;
    let stage = match i {
        0..20_000 => STAGES[i % 3],
        20_000..40_000 => STAGES[(i / 9) % 3],
        40_000..50_000 => STAGES[(i / 7) % 3],
        50_000..65_536 => STAGES[(i / 5_000) % 3],
        _ => "leaver",
    };
    let text = |s: &str| Some(s.to_string());
    OperationRow {
        // Never null (its chunks are copied at once), of lengths 3 to 7.
        correlation_id: Some(format!("c-{i}")),
        join_method: "correlation_id".into(),
        stage: stage.into(),
        // A few names (and nulls) in the first row group; one a row in the second, where a
        // dictionary would not pay.
        app: match (second_group, i % 13) {
            (false, 0) => None,
            (false, _) => text(["okta", "box", "zendesk"][i % 3]),
            (true, _) => Some(format!("app-{i}")),
        },
        // None in the first row group; empty, non-ASCII and long ones in the second.
        user_id: match (second_group, i % 5) {
            (false, _) | (true, 0) => None,
            (true, 1) => text(""),
            (true, 2) => Some(format!("üser-{i}")),
            (true, 3) => Some(format!(
                "{i}-an ID longer than a statistic's 64 bytes, kept whole"
            )),
            (true, _) => Some(format!("u-{i:06}")),
        },
        // Heads that tie (the first eight bytes are the same), and a null now and then.
        user_login: (!i.is_multiple_of(11))
            .then(|| format!("login-{}@corp.example", (i * 7_919) % 100_003)),
        // Runs of names in the first row group; none at all in the second.
        action: (!second_group).then(|| ["create", "update", "deactivate"][i / 1_000 % 3].into()),
        idp_source: match second_group {
            false => text("okta-prod"),
            true if (i / 3).is_multiple_of(2) => None,
            true => text("entra-corp"),
        },
        idp_time: Some(i as i64),
        idp_status: text(if i % 1_007 < 1_000 {
            "success"
        } else {
            "failure"
        }),
        first_attempt_time: None,
        last_attempt_time: None,
        attempts: 1,
        http_status: Some(200),
        method: match i % 23 {
            0 => None,
            1..=10 => text("POST"),
            _ => text("PATCH"),
        },
        path: None,
        outcome: OUTCOMES[i % 5].into(),
        cause: match (second_group, i % 4) {
            (false, _) => None,
            (true, 0) => None,
            (true, 1) => text("timeout"),
            (true, 2) => text("teapot"),
            (true, _) => text(
                "a cause no enum has, and longer than a statistic's 64 bytes, to be kept whole",
            ),
        },
        lag_ms: None,
        disagreement: false,
        high_risk: false,
        ingested_at: 0,
    }
}

#[test]
fn coded_and_id_columns_of_every_shape_read_back_the_same_by_duckdb_and_our_reader() {
    // scimwatch writes the coded columns' pages itself (src/audit/coded.rs), not parquet-rs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("operations.parquet");
    let rows: Vec<OperationRow> = (0..70_000).map(shaped_row).collect();
    let columns = operations_columns(&rows).unwrap();
    write_file(&path, Table::Operations, &columns).unwrap();

    assert_eq!(
        read_operations(&path).unwrap(),
        rows,
        "our reader (arrow-rs)"
    );

    // And the IDs', apps' and actions', whose pages it also writes (src/audit/ids.rs,
    // src/audit/names.rs). In the table's order.
    let coded = [
        "correlation_id",
        "join_method",
        "stage",
        "app",
        "user_id",
        "user_login",
        "action",
        "idp_source",
        "idp_status",
        "method",
        "outcome",
        "cause",
    ];
    let mut args = vec![path.to_str().unwrap()];
    args.extend(coded);
    let read = duckdb_run("dump_columns.py", &args);
    let texts = |row: &OperationRow| {
        [
            row.correlation_id.clone(),
            Some(row.join_method.clone()),
            Some(row.stage.clone()),
            row.app.clone(),
            row.user_id.clone(),
            row.user_login.clone(),
            row.action.clone(),
            row.idp_source.clone(),
            row.idp_status.clone(),
            row.method.clone(),
            Some(row.outcome.clone()),
            row.cause.clone(),
        ]
    };
    let got = read["rows"].as_array().unwrap();
    assert_eq!(got.len(), rows.len());
    for (i, (row, got)) in rows.iter().zip(got).enumerate() {
        assert_eq!(got, &serde_json::json!(texts(row)), "DuckDB, row {i}");
    }

    // Each chunk's statistics: the least and greatest text present, and the nulls.
    let mut expected = Vec::new();
    for (group, rows) in rows.chunks(65_536).enumerate() {
        for (c, name) in coded.iter().enumerate() {
            let present: Vec<String> = rows.iter().filter_map(|r| texts(r)[c].clone()).collect();
            expected.push(serde_json::json!([
                group,
                name,
                present.iter().min(),
                present.iter().max(),
                rows.len() - present.len()
            ]));
        }
    }
    assert_eq!(
        read["chunks"],
        serde_json::json!(expected),
        "DuckDB, statistics"
    );
    // The apps have a dictionary where it pays, and none where every row has its own.
    let encodings = |chunk: &str| read["encodings"][chunk].as_str().unwrap().to_string();
    assert!(encodings("0/app").contains("RLE_DICTIONARY"));
    assert!(!encodings("1/app").contains("DICTIONARY"));
    assert!(encodings("1/app").contains("DELTA_LENGTH_BYTE_ARRAY"));
}

fn export(data: &Path, out: &Path) -> std::process::Output {
    run(&[
        "export",
        "--data",
        data.to_str().unwrap(),
        "--quarter",
        "2026Q3",
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn an_export_is_byte_identical_when_repeated_and_its_manifest_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    replay_to_parquet(&data);
    let (a, b) = (dir.path().join("pack-a"), dir.path().join("pack-b"));
    assert!(export(&data, &a).status.success());
    assert!(export(&data, &b).status.success());
    for file in [
        "operations.parquet",
        "leavers.parquet",
        "post_disable_activity.parquet",
        "README.md",
        "manifest.json",
    ] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file} differs"
        );
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"]["operations"]["rows"], 24);
    assert_eq!(manifest["files"]["leavers"]["rows"], 7);
    assert_eq!(manifest["files"]["post_disable_activity"]["rows"], 1);
    // The pack explains itself to whoever opens it (QA helper-30: column meanings were only
    // in scimwatch's README): every column of every table is in its README.md.
    let readme = std::fs::read_to_string(a.join("README.md")).unwrap();
    assert_eq!(manifest["readme"]["path"], "README.md");
    for table in Table::ALL {
        assert!(
            readme.contains(&format!("## `{}`", table.name())),
            "{table:?}"
        );
        for field in table.schema().fields() {
            assert!(
                readme.contains(&format!("`{}`", field.name())),
                "{}.{} is not explained in the pack's README.md",
                table.name(),
                field.name()
            );
        }
    }
    assert_eq!(manifest["summary"]["post_disable_requests"], 1);
    let activity =
        scimwatch::audit::export::read_post_disable(&a.join("post_disable_activity.parquet"))
            .unwrap();
    assert_eq!(
        (
            activity[0].user.as_str(),
            activity[0].path.as_str(),
            activity[0].correlation_id.as_deref()
        ),
        (
            "alice@corp.example",
            "/api/v1/instances?access_token=[REDACTED]",
            Some("req-2")
        )
    );
    assert_eq!(manifest["schema_version"], "2");
    assert_eq!(manifest["time_range"]["from"], "2026-07-01T09:00:00Z");
    assert_eq!(manifest["summary"]["stages"]["leaver"]["succeeded"], 6);
    assert_eq!(manifest["summary"]["leavers"]["breaches"], 3);
    assert_eq!(
        manifest["summary"]["leavers"]["latency_seconds_p95"],
        1320.0
    );
    // Sorted by time, readable by DuckDB as one file.
    let rows = read_operations(&a.join("operations.parquet")).unwrap();
    assert!(rows.windows(2).all(|w| w[0].time() <= w[1].time()));
    let verified = run(&["export", "--verify", a.to_str().unwrap()]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    // Another quarter holds nothing. `--out` a bare name: a pack in the working directory
    // (its parent is the empty path, which once failed the directory's sync after writing).
    let empty = dir.path().join("pack-q2");
    let output = bin()
        .current_dir(dir.path())
        .args(["export", "--data", "data", "--quarter", "2026Q2"])
        .args(["--out", "pack-q2"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(empty.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"]["operations"]["rows"], 0);
}

#[test]
fn verify_catches_one_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    replay_to_parquet(&data);
    let pack = dir.path().join("pack");
    assert!(export(&data, &pack).status.success());
    let file = pack.join("operations.parquet");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let output = run(&["export", "--verify", pack.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("MISMATCH operations.parquet: SHA-256"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("leavers.parquet"),
        "only the tampered file is named: {stdout}"
    );
}

/// A pack of the bundled example logs verifies as written: its mover success rate,
/// 346/364, read back from the manifest differed from the rows' in its last bit, and a pack
/// `export` had just written was a MISMATCH.
#[test]
fn a_pack_of_the_example_logs_verifies_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scimwatch.toml");
    replay_json(&config, &["--parquet", data.to_str().unwrap()]);
    let pack = dir.path().join("pack");
    let output = run(&[
        "export",
        "--data",
        data.to_str().unwrap(),
        "--quarter",
        "2026Q3",
        "--out",
        pack.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run(&["export", "--verify", pack.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// What the audit QA pass got past `verify`: figures, the quarter and the time range edited
/// in the manifest, a file that is not part of a pack, and a manifest path that leaves the
/// pack. Each is named; the untouched pack still verifies, and its leavers are in time order.
#[test]
fn verify_works_out_the_manifest_again_from_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    replay_to_parquet(&data);
    let pack = dir.path().join("pack");
    assert!(export(&data, &pack).status.success());
    let leavers = read_leavers(&pack.join("leavers.parquet")).unwrap();
    assert!(leavers
        .windows(2)
        .all(|w| w[0].initiated_at <= w[1].initiated_at));
    let manifest = std::fs::read_to_string(pack.join("manifest.json")).unwrap();
    let tampered = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let copy = dir.path().join(name);
        let status = std::process::Command::new("cp")
            .args(["-r", pack.to_str().unwrap(), copy.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        edit(&copy);
        let output = run(&["export", "--verify", copy.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{name} passed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let rewrite = |from: &'static str, to: &'static str| {
        let manifest = manifest.clone();
        move |copy: &Path| {
            assert!(manifest.contains(from), "{from}");
            std::fs::write(copy.join("manifest.json"), manifest.replacen(from, to, 1)).unwrap();
        }
    };
    let out = tampered("breaches", &rewrite("\"breaches\": 3", "\"breaches\": 0"));
    assert!(
        out.contains("MISMATCH summary.leavers.breaches: the rows give 3, manifest says 0"),
        "{out}"
    );
    let out = tampered(
        "quarter",
        &rewrite("\"quarter\": \"2026Q3\"", "\"quarter\": \"2025Q1\""),
    );
    assert!(out.contains("rows outside 2025Q1"), "{out}");
    let out = tampered(
        "range",
        &rewrite(
            "\"from\": \"2026-07-01T09:00:00Z\"",
            "\"from\": \"2026-07-01T00:00:00Z\"",
        ),
    );
    assert!(out.contains("MISMATCH time_range"), "{out}");
    let out = tampered("readme", &|copy: &Path| {
        let mut text = std::fs::read_to_string(copy.join("README.md")).unwrap();
        text.push_str("\nmet_slo true means nothing.\n");
        std::fs::write(copy.join("README.md"), text).unwrap()
    });
    assert!(out.contains("MISMATCH README.md: SHA-256 is"), "{out}");
    let out = tampered("extra", &|copy: &Path| {
        std::fs::write(copy.join("leavers2.parquet"), b"PAR1").unwrap()
    });
    assert!(
        out.contains("MISMATCH leavers2.parquet: not part of a pack"),
        "{out}"
    );
    let out = tampered(
        "escape",
        &rewrite(
            "\"path\": \"leavers.parquet\"",
            "\"path\": \"../pack/leavers.parquet\"",
        ),
    );
    assert!(out.contains("a pack's file is leavers.parquet"), "{out}");
    let output = run(&["export", "--verify", pack.to_str().unwrap()]);
    assert!(output.status.success());
    // A pack from before `latency_resolution_ms` (whole-second quantiles) still verifies.
    let older = dir.path().join("older");
    std::fs::create_dir(&older).unwrap();
    for file in [
        "operations.parquet",
        "leavers.parquet",
        "post_disable_activity.parquet",
        "README.md",
    ] {
        std::fs::copy(pack.join(file), older.join(file)).unwrap();
    }
    let field = "\"latency_resolution_ms\": 1,";
    assert!(manifest.contains(field), "{manifest}");
    let without: String = manifest
        .lines()
        .filter(|l| l.trim() != field)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(older.join("manifest.json"), without).unwrap();
    let output = run(&["export", "--verify", older.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // A pack of schema version 1 has no post_disable_activity file, and verifies without it;
    // one of version 2 without it does not.
    let v1 = dir.path().join("v1");
    std::fs::create_dir(&v1).unwrap();
    for file in ["operations.parquet", "leavers.parquet"] {
        std::fs::copy(pack.join(file), v1.join(file)).unwrap();
    }
    let mut old: Value = serde_json::from_str(&manifest).unwrap();
    old["files"]
        .as_object_mut()
        .unwrap()
        .remove("post_disable_activity");
    old["summary"]
        .as_object_mut()
        .unwrap()
        .remove("post_disable_requests");
    old.as_object_mut().unwrap().remove("readme");
    std::fs::write(v1.join("manifest.json"), old.to_string()).unwrap();
    let output = run(&["export", "--verify", v1.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("manifest lists no post_disable_activity file") && !out.contains("README.md"),
        "{out}"
    );
    old["schema_version"] = json!("1");
    std::fs::write(v1.join("manifest.json"), old.to_string()).unwrap();
    let output = run(&["export", "--verify", v1.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// A replay split at midnight, the second half appended to the same store: a high-risk
/// leaver whose disable failed at 23:50 and went through at 00:20 is one episode of 1801 s,
/// a breach, as one replay of the whole logs says. (The second replay began a new episode at
/// 00:20, disabled in a second, and the breach was gone from the evidence.) A leaver still
/// open at the end of a replay has its row (state `open`), which the pack counts.
#[test]
fn a_replay_appended_to_a_store_carries_on_with_the_leavers_it_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let body =
        r#""request_body":"{\"Operations\":[{\"op\":\"replace\",\"value\":{\"active\":false}}]}""#;
    let idp = |ts: &str, cid: &str, result: &str| {
        format!("{{\"ts\":\"{ts}\",\"cid\":\"{cid}\",\"action\":\"deactivate\",\"app\":\"github\",\"user\":\"leaver1@corp.example\",\"user_id\":\"l1\",\"result\":\"{result}\"}}\n")
    };
    let gateway = |time: &str, cid: &str, status: u16| {
        format!("{{\"time\":\"{time}\",\"xrid\":\"{cid}\",\"method\":\"PATCH\",\"uri\":\"/scim/v2/Users/l1\",\"status\":{status},\"request_time\":0.1,\"remote_user\":\"scim-github\",\"app\":\"github\",{body}}}\n")
    };
    let (idp_a, idp_b) = (
        idp("2026-09-30T23:50:00Z", "L1a", "failure"),
        idp("2026-10-01T00:20:00Z", "L1b", "success"),
    );
    let (gw_a, gw_b) = (
        gateway("2026-09-30T23:50:01Z", "L1a", 503),
        gateway("2026-10-01T00:20:01Z", "L1b", 204),
    );
    let replay = |idp: &Path, gateway: &Path, store: &Path, append: bool| -> Value {
        let output = replay_example(idp, gateway, store, append);
        // The second half starts where the first ended: no overlap to warn of.
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains("warning"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let store = dir.path().join("store");
    let first = replay(
        &write("a-idp.jsonl", &idp_a),
        &write("a-gw.log", &gw_a),
        &store,
        false,
    );
    assert_eq!(first["leavers"]["open"], 1, "{first:#}");
    let rows = store_leavers(&store);
    assert_eq!(rows.len(), 1);
    // Open and inside its deadline at the replay's end: not judged yet (met_slo null).
    assert_eq!((rows[0].state.as_str(), rows[0].met_slo), ("open", None));
    replay(
        &write("b-idp.jsonl", &idp_b),
        &write("b-gw.log", &gw_b),
        &store,
        true,
    );
    let whole = replay(
        &write("idp.jsonl", &(idp_a + &idp_b)),
        &write("gw.log", &(gw_a + &gw_b)),
        &dir.path().join("whole"),
        false,
    );
    assert_eq!(whole["leavers"]["breaches"], 1, "{whole:#}");
    for store in [store, dir.path().join("whole")] {
        let pack = store.with_extension("pack");
        let output = run(&[
            "export",
            "--data",
            store.to_str().unwrap(),
            "--quarter",
            "2026Q3",
            "--out",
            pack.to_str().unwrap(),
        ]);
        assert!(output.status.success());
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(pack.join("manifest.json")).unwrap()).unwrap();
        let leavers = &manifest["summary"]["leavers"];
        assert_eq!(
            (&leavers["episodes"], &leavers["disabled"], &leavers["open"]),
            (&Value::from(1), &Value::from(1), &Value::from(0)),
            "{store:?}: {leavers:#}"
        );
        assert_eq!(leavers["high_risk_breaches"], 1, "{store:?}: {leavers:#}");
        assert_eq!(
            leavers["latency_seconds_max"], 1801.0,
            "{store:?}: {leavers:#}"
        );
    }
}

/// Every `leavers` row under a store, over all its files.
fn store_leavers(store: &Path) -> Vec<scimwatch::audit::schema::LeaverRow> {
    let mut files: Vec<PathBuf> = parquet_files(store)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/leavers/"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| read_leavers(f).unwrap())
        .collect()
}

#[test]
fn export_errors_name_the_path_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // A store that does not exist.
    let missing = dir.path().join("nope");
    let output = export(&missing, &dir.path().join("pack"));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(missing.to_str().unwrap()));
    // A directory that is not a store (it used to fail on "operations: No such file").
    std::fs::create_dir_all(&missing).unwrap();
    let output = export(&missing, &dir.path().join("pack"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("is not a scimwatch data directory (it has no operations/ or leavers/)"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A corrupt file in the store.
    let data = dir.path().join("data");
    replay_to_parquet(&data);
    let corrupt = data.join("operations/date=2026-07-02/part-x.parquet");
    std::fs::create_dir_all(corrupt.parent().unwrap()).unwrap();
    std::fs::write(&corrupt, b"PAR1 not really parquet").unwrap();
    let pack = dir.path().join("pack");
    let output = export(&data, &pack);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("part-x.parquet") && stderr.contains("not a readable Parquet file"),
        "{stderr}"
    );
    assert!(!pack.exists(), "no half-written pack");
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
    // An existing pack is never overwritten.
    std::fs::remove_file(&corrupt).unwrap();
    assert!(export(&data, &pack).status.success());
    let again = export(&data, &pack);
    assert_eq!(again.status.code(), Some(2), "bad usage");
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn an_unwritable_or_full_store_is_a_clear_error_with_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture("core/scimwatch.toml");
    // A path under a regular file cannot be a directory.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let output = bin()
        .args([
            "replay",
            "--config",
            config.to_str().unwrap(),
            "--parquet",
            blocker.join("data").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(blocker.to_str().unwrap()));

    // A full disk: a 64 KiB tmpfs (needs root, as CI runs; elsewhere this part is skipped).
    let mount_point = dir.path().join("full");
    std::fs::create_dir_all(&mount_point).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "tmpfs",
            mount_point.to_str().unwrap(),
        ])
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("skipping the full-disk case: cannot mount a tmpfs (not root)");
        return;
    }
    let logs = dir.path().join("logs");
    assert!(run(&[
        "generate",
        "--out",
        logs.to_str().unwrap(),
        "--operations",
        "20000"
    ])
    .status
    .success());
    std::fs::write(
        dir.path().join("big.toml"),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scimwatch.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let data = mount_point.join("data");
    let output = bin()
        .args([
            "replay",
            "--config",
            dir.path().join("big.toml").to_str().unwrap(),
            "--format",
            "json",
            "--parquet",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let leftovers: Vec<PathBuf> = walk(&mount_point);
    let _ = Command::new("umount").arg(&mount_point).status();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("No space left on device")
            && stderr.contains(mount_point.to_str().unwrap()),
        "{stderr}"
    );
    assert!(
        leftovers
            .iter()
            .all(|p| !p.file_name().unwrap().to_string_lossy().ends_with(".tmp")),
        "{leftovers:?}"
    );
}

/// What a store holds, as DuckDB reads it: rows, a hash over every column but `ingested_at`,
/// and files per date (tests/python/digest_parquet.py).
fn duckdb_digest(data: &Path) -> Value {
    duckdb_script("digest_parquet.py", data)
}

/// Generated traffic (8,000 operations over two days, with incidents) for the threads tests.
fn generated(dir: &Path) -> (String, String) {
    let args = [
        "8000",
        "--users",
        "1500",
        "--mean-gap-secs",
        "25",
        "--seed",
        "11",
    ];
    generated_with(dir, &args)
}

/// `scimwatch generate --out DIR --operations ARGS…`: the IdP and gateway logs' paths.
fn generated_with(dir: &Path, operations_and_more: &[&str]) -> (String, String) {
    let mut args = vec!["generate", "--out", dir.to_str().unwrap(), "--operations"];
    args.extend_from_slice(operations_and_more);
    let generate = run(&args);
    assert!(generate.status.success(), "{generate:?}");
    (
        dir.join("idp.jsonl").to_str().unwrap().to_string(),
        dir.join("gateway.log").to_str().unwrap().to_string(),
    )
}

fn replay_generated(idp: &str, gateway: &str, extra: &[&str]) -> std::process::Output {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scimwatch.toml");
    let mut args = vec![
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--idp",
        idp,
        "--gateway",
        gateway,
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// `replay --threads T --parquet DATA --rows-per-file N` on the generated logs.
fn replay_threads(
    (idp, gateway): (&str, &str),
    threads: &str,
    data: &Path,
    rows_per_file: &str,
) -> std::process::Output {
    let data = data.to_str().unwrap();
    let args = [
        "--threads",
        threads,
        "--parquet",
        data,
        "--rows-per-file",
        rows_per_file,
    ];
    replay_generated(idp, gateway, &args)
}

#[test]
fn replay_on_one_two_or_three_threads_gives_the_same_report_and_the_same_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let (idp, gateway) = generated(&dir.path().join("logs"));
    let mut results = Vec::new();
    for threads in ["1", "2", "3"] {
        let data = dir.path().join(format!("store-{threads}"));
        // Several files a day, so the writer thread closes and commits files mid-run.
        let output = replay_threads((&idp, &gateway), threads, &data, "1500");
        assert!(output.status.success(), "{output:?}");
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        let digest = duckdb_digest(&data);
        results.push((threads, report, digest));
    }
    let (_, report, digest) = &results[0];
    assert!(report["stages"]["joiner"]["operations"].as_u64().unwrap() > 4000);
    let stages: u64 = ["joiner", "mover", "leaver"]
        .iter()
        .map(|s| report["stages"][s]["operations"].as_u64().unwrap())
        .sum();
    let rows =
        stages + report["skipped"].as_u64().unwrap() + report["unattributed"].as_u64().unwrap();
    assert_eq!(digest["operations"]["rows"], rows, "{digest}");
    let days = digest["operations"]["files_per_date"].as_object().unwrap();
    assert!(
        days.len() >= 2 && days.values().any(|n| n.as_u64() > Some(1)),
        "{digest}"
    );
    assert!(
        digest["leavers"]["rows"].as_u64().unwrap() > 100,
        "{digest}"
    );
    for (threads, other_report, other_digest) in &results[1..] {
        assert_eq!(
            other_report, report,
            "--threads {threads} changed the report"
        );
        assert_eq!(
            other_digest, digest,
            "--threads {threads} changed the Parquet store"
        );
    }
}

#[test]
fn files_fill_to_rows_per_file_though_rows_reach_the_encoder_a_few_thousand_at_a_time() {
    // 12,000 operations on one day, files of 5,000 rows: rows go to the encoder 4,096 at a
    // time, so a file fills partway through a write and the rest starts the next file. That
    // file stays open (only the full one is committed), so every file but the last is full,
    // and the other table's open file is left as it is.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "12000",
        "--users",
        "3000",
        "--mean-gap-secs",
        "1",
        "--seed",
        "5",
    ];
    let (idp, gateway) = generated_with(&dir.path().join("logs"), &args);
    let data = dir.path().join("store");
    let output = replay_threads((&idp, &gateway), "2", &data, "5000");
    assert!(output.status.success(), "{output:?}");
    let digest = duckdb_digest(&data);
    let days = digest["operations"]["file_rows"].as_object().unwrap();
    assert_eq!(days.len(), 1, "{digest}");
    let files: Vec<u64> = days
        .values()
        .next()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    let total = digest["operations"]["rows"].as_u64().unwrap();
    assert!(total > 10_000, "{digest}");
    let mut expected = vec![5000; (total / 5000) as usize];
    expected.extend(Some(total % 5000).filter(|&rest| rest > 0));
    assert_eq!(files, expected, "{digest}");
    // Committing a full operations file leaves the leavers' open file alone.
    assert_eq!(
        digest["leavers"]["files_per_date"],
        serde_json::json!({ "2026-07-01": 1 }),
        "{digest}"
    );
}

#[test]
fn a_parquet_write_that_fails_on_any_thread_fails_the_replay_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (idp, gateway) = generated(&dir.path().join("logs"));
    // A file where the first date's partition directory must go: creating it fails.
    let probe = dir.path().join("probe");
    let output = replay_generated(&idp, &gateway, &["--parquet", probe.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let first_day = std::fs::read_dir(probe.join("operations"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|name| name.starts_with("date="))
        .min()
        .unwrap();
    // The sink runs on the engine's thread (1), the reader's (2) or its own (3).
    for threads in ["1", "2", "3"] {
        let data = dir.path().join(format!("store-{threads}"));
        std::fs::create_dir_all(data.join("operations")).unwrap();
        std::fs::write(data.join("operations").join(&first_day), "not a directory").unwrap();
        // Files of 1,000 rows: the first is written (and fails) mid-replay, in the sink.
        let output = replay_threads((&idp, &gateway), threads, &data, "1000");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "--threads {threads}: {stderr}"
        );
        assert!(stderr.contains(&first_day), "--threads {threads}: {stderr}");
        assert_eq!(
            stderr.matches("os error").count(),
            1,
            "the cause once: {stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "--threads {threads}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "no report after a failed write");
        assert!(parquet_files(&data).is_empty(), "--threads {threads}");
    }
}

/// `replay --append` carries on with an episode the store holds as open, and with what
/// started its clock. ada, disabled in Entra (its audit log is a trigger source), gets a
/// disable in acme the target never answered, so her episode is open, timed from Entra, when
/// the first replay ends; the second replay's logs hold only Entra enabling her again. As
/// one replay of all the logs says, that cancels the episode: before the store kept
/// `clock_start` (schema version 2), the carried-over episode could not tell a return at
/// the source had anything to do with it, and stayed open (a breach in every later pack).
#[test]
fn an_appended_replay_knows_what_started_a_carried_over_clock() {
    let fixture = fixture("vendors/entra");
    let read = |name: &str| std::fs::read_to_string(fixture.join(name)).unwrap();
    let line = |name: &str, needle: &str| {
        read(name)
            .lines()
            .find(|l| l.contains(needle))
            .unwrap()
            .to_string()
    };
    let disabled = line("audit.jsonl", "Directory_7f1c0d2a_A1");
    let enabled = disabled
        .replace("Directory_7f1c0d2a_A1", "Directory_7f1c0d2a_A9")
        .replace("Disable account", "Enable account")
        .replace("08:51:10", "09:40:00")
        .replace("[false]", "[true]");
    let ada_s_disable = line("provisioning.jsonl", "\"changeId\":\"ch-dis\"");
    let dir = tempfile::tempdir().unwrap();
    let part = |name: &str, audit: &[&str], provisioning: &[&str]| {
        let at = dir.path().join(name);
        std::fs::create_dir(&at).unwrap();
        std::fs::copy(fixture.join("with-audit.toml"), at.join("scimwatch.toml")).unwrap();
        let lines = |lines: &[&str]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        std::fs::write(at.join("audit.jsonl"), lines(audit)).unwrap();
        std::fs::write(at.join("provisioning.jsonl"), lines(provisioning)).unwrap();
        // The target never answers ada's disable: unconfirmed, her episode stays open.
        std::fs::write(at.join("envoy-access.log"), "").unwrap();
        at.join("scimwatch.toml")
    };
    let first = part("first", &[&disabled], &[&ada_s_disable]);
    let second = part("second", &[&enabled], &[]);
    let whole = part("whole", &[&disabled, &enabled], &[&ada_s_disable]);

    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let report = replay_json(&first, &["--parquet", store_arg]);
    assert_eq!(report["leavers"]["open"], 1, "{report:#}");
    let rows = store_leavers(&store);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].state.as_str(),
            rows[0].clock_start.as_deref(),
            rows[0].initiated_by.as_deref(),
            rows[0].initiated_at
        ),
        (
            "open",
            Some("user_trigger"),
            Some("trigger"),
            ts("2026-07-01T08:51:10Z")
        )
    );
    // Open 38m50s at the replay's end (09:30:00.87): past acme's 15 minutes, judged so.
    assert_eq!(rows[0].met_slo, Some(false));
    assert_eq!(rows[0].as_of, Some(ts("2026-07-01T09:30:00.869547Z")));

    let report = replay_json(&second, &["--parquet", store_arg, "--append"]);
    assert_eq!(report["leavers"]["open"], 0, "{report:#}");
    let mut states: Vec<String> = store_leavers(&store).into_iter().map(|r| r.state).collect();
    states.sort();
    assert_eq!(states, ["cancelled", "open"]);

    let once = dir.path().join("once");
    let report = replay_json(&whole, &["--parquet", once.to_str().unwrap()]);
    assert_eq!(report["leavers"]["open"], 0, "{report:#}");
    let rows = store_leavers(&once);
    assert_eq!(
        rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(),
        ["cancelled"]
    );
}

fn default_policy() -> scimwatch::judge::Policy {
    scimwatch::judge::Policy::from_config(&Default::default())
}

fn ts(text: &str) -> i64 {
    scimwatch::time::parse_time(text, scimwatch::time::TimeFormat::Rfc3339)
        .unwrap()
        .0
}

/// A leavers row that contradicts itself is caught by `verify` even when the pack was
/// exported from it, manifest and all (QA helper-30: a store row's `met_slo` set to true
/// beside a latency of 1,320 s and a deadline of 900 s gave a pack with one breach fewer, and
/// `verify` said it was fine).
#[test]
fn verify_catches_a_leaver_row_that_contradicts_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    replay_to_parquet(&data);
    let file = parquet_files(&data)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/leavers/"))
        .unwrap();
    let mut rows = read_leavers(&file).unwrap();
    let bob = rows
        .iter_mut()
        .find(|r| r.user_login.as_deref() == Some("bob@corp.example"))
        .unwrap();
    assert_eq!(bob.met_slo, Some(false));
    bob.met_slo = Some(true);
    // dave, open past his deadline: his as_of and met_slo cleared, as if never judged.
    let dave = rows
        .iter_mut()
        .find(|r| r.user_login.as_deref() == Some("dave@corp.example"))
        .unwrap();
    assert_eq!((dave.state.as_str(), dave.met_slo), ("open", Some(false)));
    (dave.as_of, dave.met_slo) = (None, None);
    let batch = scimwatch::audit::schema::leavers_columns(&rows).unwrap();
    write_file(&file, Table::Leavers, &batch).unwrap();
    let pack = dir.path().join("pack");
    assert!(export(&data, &pack).status.success());
    let output = run(&["export", "--verify", pack.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "(aws-prod bob@corp.example): met_slo true, but 1320 s against a deadline of 900 s"
        ),
        "{out}"
    );
    assert!(
        out.contains("(aws-prod dave@corp.example): state open without as_of"),
        "{out}"
    );
}

/// The overlap refusal compares the time each operation is filed under (its IdP record's),
/// not its gateway answer's: logs that start after the store's last operation but before that
/// operation's answer overlap nothing (QA helper-32 was warned of an overlap falsely).
#[test]
fn the_append_overlap_refusal_compares_operation_times() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let idp = |ts: &str, cid: &str| {
        format!("{{\"ts\":\"{ts}\",\"cid\":\"{cid}\",\"action\":\"create\",\"app\":\"github\",\"user\":\"u@corp.example\",\"user_id\":\"u1\",\"result\":\"success\"}}\n")
    };
    let gateway = |time: &str, cid: &str| {
        format!("{{\"time\":\"{time}\",\"xrid\":\"{cid}\",\"method\":\"POST\",\"uri\":\"/scim/v2/Users\",\"status\":201,\"request_time\":0.1,\"remote_user\":\"scim-github\",\"app\":\"github\"}}\n")
    };
    let store = dir.path().join("store");
    let replay = |name: &str, at: &str, answered: &str| -> String {
        let output = replay_example(
            &write(&format!("{name}-idp.jsonl"), idp(at, name)),
            &write(&format!("{name}-gw.log"), gateway(answered, name)),
            &store,
            true,
        );
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // One operation at 10:00:00, answered at 10:00:05.
    let stderr = replay("c1", "2026-07-01T10:00:00Z", "2026-07-01T10:00:05Z");
    assert!(!stderr.contains("warning"), "{stderr}");
    // The next logs start at 10:00:02: after it, though before its answer.
    let stderr = replay("c2", "2026-07-01T10:00:02Z", "2026-07-01T10:00:03Z");
    assert!(!stderr.contains("warning"), "{stderr}");
    // Logs that start at the store's newest instant and go on past it may be the next ones
    // cut at a busy instant: written.
    let output = replay_example(
        &write(
            "c3-idp.jsonl",
            idp("2026-07-01T10:00:02Z", "c3a") + &idp("2026-07-01T10:00:03Z", "c3b"),
        ),
        &write(
            "c3-gw.log",
            gateway("2026-07-01T10:00:02Z", "c3a") + &gateway("2026-07-01T10:00:03Z", "c3b"),
        ),
        &store,
        true,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let files = std::fs::read_dir(store.join("operations/date=2026-07-01"))
        .unwrap()
        .count();
    // Logs that lie within the store's span may repeat its records: refused, nothing kept.
    let output = replay_example(
        &write("c4-idp.jsonl", idp("2026-07-01T10:00:01Z", "c4")),
        &write("c4-gw.log", gateway("2026-07-01T10:00:02Z", "c4")),
        &store,
        true,
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "(2026-07-01T10:00:01Z to 2026-07-01T10:00:01Z) do not come after the store's \
             (2026-07-01T10:00:00Z to 2026-07-01T10:00:03Z)"
        ),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(store.join("operations/date=2026-07-01"))
            .unwrap()
            .count(),
        files
    );
}

/// `replay --append` carries on with who the store saw disabled. leaver1 was disabled in
/// github before the split and is deactivated again after it (an IdP re-sync, a delete after
/// the disable): no second episode, as one replay says (clarification 15), and their token
/// still calling github after the split is post-disable activity (13). leaver2 was disabled
/// and rehired before the split, so their leave after it is a new episode. The second replay
/// used to open a second episode for leaver1 (disabled in a second) and see no post-disable
/// activity at all (QA helper-30).
#[test]
fn an_appended_replay_knows_who_the_store_saw_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, lines: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.concat()).unwrap();
        path
    };
    let idp = |ts: &str, cid: &str, action: &str, user: &str| {
        format!("{{\"ts\":\"{ts}\",\"cid\":\"{cid}\",\"action\":\"{action}\",\"app\":\"github\",\"user\":\"{user}@corp.example\",\"user_id\":\"{user}\",\"result\":\"success\"}}\n")
    };
    let gateway = |time: &str, cid: &str, method: &str, status: u16, principal: &str| {
        format!("{{\"time\":\"{time}\",\"xrid\":\"{cid}\",\"method\":\"{method}\",\"uri\":\"/scim/v2/Users/x\",\"status\":{status},\"request_time\":0.1,\"remote_user\":\"{principal}\",\"app\":\"github\"}}\n")
    };
    let first_idp = [
        idp("2026-09-30T23:40:00Z", "a1", "deactivate", "leaver1"),
        idp("2026-09-30T23:41:00Z", "b1", "deactivate", "leaver2"),
        idp("2026-09-30T23:45:00Z", "b2", "create", "leaver2"),
    ];
    let first_gw = [
        gateway("2026-09-30T23:40:01Z", "a1", "PATCH", 204, "scim-github"),
        gateway("2026-09-30T23:41:01Z", "b1", "PATCH", 204, "scim-github"),
        gateway("2026-09-30T23:45:01Z", "b2", "POST", 201, "scim-github"),
    ];
    let second_idp = [
        idp("2026-10-01T00:20:00Z", "a2", "deactivate", "leaver1"),
        idp("2026-10-01T00:25:00Z", "b3", "deactivate", "leaver2"),
    ];
    let second_gw = [
        // leaver2, rehired before the split, still works there until their leave at 00:25.
        gateway(
            "2026-10-01T00:10:00Z",
            "",
            "GET",
            200,
            "leaver2@corp.example",
        ),
        gateway("2026-10-01T00:20:01Z", "a2", "DELETE", 204, "scim-github"),
        gateway("2026-10-01T00:25:01Z", "b3", "PATCH", 204, "scim-github"),
        gateway(
            "2026-10-01T00:30:00Z",
            "",
            "GET",
            200,
            "leaver1@corp.example",
        ),
    ];
    let replay = |idp: &Path, gateway: &Path, store: &Path, append: bool| -> Value {
        let output = replay_example(idp, gateway, store, append);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let store = dir.path().join("store");
    let first = replay(
        &write("a-idp.jsonl", &first_idp),
        &write("a-gw.log", &first_gw),
        &store,
        false,
    );
    assert_eq!(first["leavers"]["disabled"], 2, "{first:#}");
    let second = replay(
        &write("b-idp.jsonl", &second_idp),
        &write("b-gw.log", &second_gw),
        &store,
        true,
    );
    let whole = replay(
        &write("w-idp.jsonl", &[first_idp.concat(), second_idp.concat()]),
        &write("w-gw.log", &[first_gw.concat(), second_gw.concat()]),
        &dir.path().join("whole"),
        false,
    );
    // One replay: leaver1 one episode, leaver2 two (rehired between), one request after.
    assert_eq!(whole["leavers"]["episodes"], 3, "{whole:#}");
    assert_eq!(whole["post_disable_activity"].as_array().unwrap().len(), 1);
    // The appended one: only leaver2's second leave is an episode, and the request is seen.
    assert_eq!(second["leavers"]["episodes"], 1, "{second:#}");
    let activity = second["post_disable_activity"].as_array().unwrap();
    assert_eq!(activity.len(), 1, "{second:#}");
    assert_eq!(activity[0]["user"], "leaver1@corp.example");
    assert_eq!(store_leavers(&store).len(), 3);
}

/// Which closures an appended replay carries: those whose clock was an operation (core
/// fixture: bob, disabled in aws-prod), not those of a user disabled at the source (the Entra
/// fixture's audit log: ada and dan), whose return there the store would not show (QA
/// helper-33: carrying them hid the next leave of a user Entra had re-enabled).
#[test]
fn only_closures_the_store_can_vouch_for_carry_over() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core");
    replay_to_parquet(&core);
    let closed =
        scimwatch::audit::export::carry_over(&core, &Default::default(), &default_policy())
            .unwrap()
            .closed;
    assert!(
        closed
            .iter()
            .any(|c| c.app == "aws-prod" && c.user_login.as_deref() == Some("bob@corp.example")),
        "{closed:?}"
    );
    assert!(closed
        .windows(2)
        .all(|w| w[0].disabled_at <= w[1].disabled_at));
    let entra = dir.path().join("entra");
    replay_json(
        &fixture("vendors/entra/with-audit.toml"),
        &["--parquet", entra.to_str().unwrap()],
    );
    let rows = store_leavers(&entra);
    assert!(rows
        .iter()
        .any(|r| r.clock_start.as_deref() == Some("user_trigger") && r.state == "disabled"));
    assert_eq!(
        scimwatch::audit::export::carry_over(&entra, &Default::default(), &default_policy())
            .unwrap()
            .closed,
        [],
        "{rows:?}"
    );
}

/// `replay --append` after `[apps] aliases` made two names one app: the store's rows under
/// the old name are carried on under the new one, and what the store holds under both is
/// settled as one app would stand, as the daemon settles it at a restart. leaver1 was
/// disabled under `github` after an episode opened under `gh-ent`: that episode ends at the
/// disable, and the pack holds it once (the disable's own row is disabled at the same
/// instant). leaver2 has an episode open under each name: the older stays open with both
/// operations, the younger is cancelled. leaver3's episode, open under `gh-ent`, closes at
/// the appended logs' disable under `github`. leaver4 was disabled twice under `github`, a
/// rehire between: the `gh-ent` episode ends at the first (QA helper-68: it ended at the
/// last, and the pack made it a breach of days and dropped the second episode). leaver5's
/// disable under `github` took a retry, and the `gh-ent` leave came between its attempts:
/// the pair stands disabled after the settling, so the appended logs' failed leave opens
/// nothing (helper-68: it opened an episode). The pack is what one replay of all the logs
/// with the aliases writes, and a third append changes nothing. Before, the pack listed
/// leaver1 and leaver2 as still open, and leaver3 as open beside a new disabled episode.
#[test]
fn an_appended_replay_carries_on_under_the_names_changed_aliases_give() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scimwatch.toml");
    let example = std::fs::read_to_string(example).unwrap();
    let before = dir.path().join("before.toml");
    std::fs::write(&before, &example).unwrap();
    let after = dir.path().join("after.toml");
    std::fs::write(
        &after,
        example + "\n[apps]\naliases = { \"github\" = [\"gh-ent\"] }\n",
    )
    .unwrap();
    let write = |name: &str, lines: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.concat()).unwrap();
        path
    };
    let record = |ts: &str, cid: &str, action: &str, app: &str, user: &str| {
        format!("{{\"ts\":\"{ts}\",\"cid\":\"{cid}\",\"action\":\"{action}\",\"app\":\"{app}\",\"user\":\"{user}@corp.example\",\"user_id\":\"{user}\",\"result\":\"success\"}}\n")
    };
    let idp = |ts: &str, cid: &str, app: &str, user: &str| record(ts, cid, "deactivate", app, user);
    let gateway = |time: &str, cid: &str, status: u16, app: &str| {
        let method = if status == 201 { "POST" } else { "PATCH" };
        format!("{{\"time\":\"{time}\",\"xrid\":\"{cid}\",\"method\":\"{method}\",\"uri\":\"/scim/v2/Users/x\",\"status\":{status},\"request_time\":0.1,\"remote_user\":\"scim-github\",\"app\":\"{app}\"}}\n")
    };
    let first_idp = [
        idp("2026-09-01T10:00:00Z", "a1", "gh-ent", "leaver1"),
        idp("2026-09-01T10:01:00Z", "b1", "gh-ent", "leaver2"),
        idp("2026-09-01T10:02:00Z", "b2", "github", "leaver2"),
        idp("2026-09-01T10:03:00Z", "c1", "gh-ent", "leaver3"),
        idp("2026-09-01T10:04:00Z", "d1", "gh-ent", "leaver4"),
        idp("2026-09-01T10:10:00Z", "a2", "github", "leaver1"),
        idp("2026-09-01T10:12:00Z", "d2", "github", "leaver4"),
        record("2026-09-01T10:20:00Z", "d3", "create", "github", "leaver4"),
        idp("2026-09-01T10:30:00Z", "d4", "github", "leaver4"),
        idp("2026-09-01T10:40:00Z", "e1", "github", "leaver5"),
        idp("2026-09-01T10:40:10Z", "e2", "gh-ent", "leaver5"),
    ];
    let first_gw = [
        gateway("2026-09-01T10:00:01Z", "a1", 500, "gh-ent"),
        gateway("2026-09-01T10:01:01Z", "b1", 500, "gh-ent"),
        gateway("2026-09-01T10:02:01Z", "b2", 500, "github"),
        gateway("2026-09-01T10:03:01Z", "c1", 500, "gh-ent"),
        gateway("2026-09-01T10:04:01Z", "d1", 500, "gh-ent"),
        gateway("2026-09-01T10:10:01Z", "a2", 204, "github"),
        gateway("2026-09-01T10:12:01Z", "d2", 204, "github"),
        gateway("2026-09-01T10:20:01Z", "d3", 201, "github"),
        gateway("2026-09-01T10:30:01Z", "d4", 204, "github"),
        gateway("2026-09-01T10:40:01Z", "e1", 500, "github"),
        gateway("2026-09-01T10:40:11Z", "e2", 500, "gh-ent"),
        gateway("2026-09-01T10:40:30Z", "e1", 204, "github"),
    ];
    let second_idp = [
        idp("2026-09-01T11:00:00Z", "c2", "github", "leaver3"),
        idp("2026-09-01T11:05:00Z", "e3", "github", "leaver5"),
    ];
    let second_gw = [
        gateway("2026-09-01T11:00:01Z", "c2", 204, "github"),
        gateway("2026-09-01T11:05:01Z", "e3", 500, "github"),
    ];
    let third_idp = [record(
        "2026-09-01T12:00:00Z",
        "f1",
        "create",
        "github",
        "joiner1",
    )];
    let third_gw = [gateway("2026-09-01T12:00:01Z", "f1", 201, "github")];
    let replay = |config: &Path, idp: &Path, gateway: &Path, extra: &[&str]| {
        let mut args = vec![
            "--idp",
            idp.to_str().unwrap(),
            "--gateway",
            gateway.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        replay_json(config, &args)
    };
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let first = replay(
        &before,
        &write("a-idp.jsonl", &first_idp),
        &write("a-gw.log", &first_gw),
        &["--parquet", store_arg],
    );
    assert_eq!(first["leavers"]["open"], 6, "{first:#}");
    // With the aliases unchanged, nothing is settled: each name's episodes carry on.
    let unchanged =
        scimwatch::audit::export::carry_over(&store, &Default::default(), &default_policy())
            .unwrap();
    assert_eq!((unchanged.open.len(), unchanged.ended.len()), (6, 0));
    let append = |name: &str, idp: &[String], gateway: &[String]| {
        let output = bin()
            .args(["replay", "--format", "json", "--config"])
            .arg(&after)
            .args(["--idp"])
            .arg(write(&format!("{name}-idp.jsonl"), idp))
            .arg("--gateway")
            .arg(write(&format!("{name}-gw.log"), gateway))
            .args(["--parquet", store_arg, "--append"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        (report, stderr)
    };
    let (second, stderr) = append("b", &second_idp, &second_gw);
    assert!(
        stderr.contains("ending 4 open leaver episode(s)"),
        "{stderr}"
    );
    // leaver2's merged episode is still open; leaver3's closed; leaver5's leave opens none.
    assert_eq!(second["leavers"]["episodes"], 2, "{second:#}");
    assert_eq!(second["leavers"]["open"], 1, "{second:#}");
    assert_eq!(second["leavers"]["disabled"], 1, "{second:#}");

    let pack_of = |name: &str| {
        let pack = dir.path().join(name);
        let output = run(&[
            "export",
            "--data",
            store_arg,
            "--quarter",
            "2026Q3",
            "--out",
            pack.to_str().unwrap(),
            "--config",
            after.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        read_leavers(&pack.join("leavers.parquet")).unwrap()
    };
    let summary = |rows: &[scimwatch::audit::schema::LeaverRow]| {
        let mut seen: Vec<(String, String, String, String, Option<String>, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.user_id.clone().unwrap(),
                    r.app.clone(),
                    scimwatch::time::Ts(r.initiated_at).to_string(),
                    r.state.clone(),
                    r.disabled_at.map(|t| scimwatch::time::Ts(t).to_string()),
                    r.high_risk,
                )
            })
            .collect();
        seen.sort();
        seen
    };
    let rows = pack_of("pack");
    let row = |user: &str, at: &str, state: &str, disabled: Option<&str>| {
        (
            user.to_string(),
            "github".to_string(),
            at.to_string(),
            state.to_string(),
            disabled.map(str::to_string),
            // github is high-risk in the example's policy: so is every episode under
            // gh-ent now, though the first replay decided them by the old name
            // (QA helper-70).
            true,
        )
    };
    let disabled = |user: &str, at: &str, disabled: &str| row(user, at, "disabled", Some(disabled));
    assert_eq!(
        summary(&rows),
        [
            disabled("leaver1", "2026-09-01T10:00:00Z", "2026-09-01T10:10:01Z"),
            row("leaver2", "2026-09-01T10:01:00Z", "open", None),
            disabled("leaver3", "2026-09-01T10:03:00Z", "2026-09-01T11:00:01Z"),
            disabled("leaver4", "2026-09-01T10:04:00Z", "2026-09-01T10:12:01Z"),
            disabled("leaver4", "2026-09-01T10:30:00Z", "2026-09-01T10:30:01Z"),
            disabled("leaver5", "2026-09-01T10:40:00Z", "2026-09-01T10:40:30Z"),
        ]
    );
    let cids = |user: &str| {
        let row = rows.iter().find(|r| r.user_id.as_deref() == Some(user));
        row.unwrap().correlation_ids.clone()
    };
    assert_eq!(cids("leaver2"), ["b1", "b2"]);
    // leaver1's two rows are disabled at one instant: one episode, begun at the first
    // leave, as one replay of all the logs with the aliases says.
    assert_eq!(cids("leaver1"), ["a1", "a2"]);
    // The row that ends an episode is under the name its `open` row was written with: one
    // episode to a reader with these aliases or without.
    let ended: Vec<(String, String)> = (store_leavers(&store).into_iter())
        .filter(|r| r.initiated_at == ts("2026-09-01T10:00:00Z"))
        .map(|r| (r.app, r.state))
        .collect();
    assert_eq!(
        ended,
        [
            ("gh-ent".into(), "open".into()),
            ("gh-ent".into(), "disabled".into())
        ]
    );

    // A third append: nothing left to settle, and the pack is the same.
    let (_, stderr) = append("c", &third_idp, &third_gw);
    assert!(!stderr.contains("ending"), "{stderr}");
    assert_eq!(summary(&pack_of("pack-again")), summary(&rows));

    let whole = dir.path().join("whole");
    replay(
        &after,
        &write(
            "w-idp.jsonl",
            &[first_idp.concat(), second_idp.concat(), third_idp.concat()],
        ),
        &write(
            "w-gw.log",
            &[first_gw.concat(), second_gw.concat(), third_gw.concat()],
        ),
        &["--parquet", whole.to_str().unwrap()],
    );
    assert_eq!(summary(&store_leavers(&whole)), summary(&rows));
}
