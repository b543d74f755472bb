//! `scimwatch run` on real files: appends, every kind of rotation, partial and huge lines,
//! deadlines that fire with no new input, SIGTERM, and kill -9 with exactly-once recovery.

mod common;

use common::daemon::{by_cid, now, operation_lines, operation_lines_at, Setup, CONFIG};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(20);

/// Writes `n` operations named `{prefix}-{i}`: IdP line to idp.jsonl, gateway line via `gateway`.
fn write_ops(
    setup: &Setup,
    prefix: &str,
    range: std::ops::Range<usize>,
    gateway: &str,
) -> Vec<String> {
    let mut cids = Vec::new();
    for i in range {
        let cid = format!("{prefix}-{i}");
        let (idp, gw) = operation_lines(&cid);
        setup.append("logs/idp.jsonl", &idp);
        setup.append(gateway, &gw);
        cids.push(cid);
    }
    cids
}

/// Every expected operation is committed exactly once, as a success (both lines were read).
fn assert_exactly_once(setup: &Setup, expected: &[String]) {
    let rows = setup.wait_for(SETTLE, |rows| {
        let map = by_cid(rows);
        expected.iter().all(|cid| map.contains_key(cid))
    });
    let map = by_cid(&rows);
    for cid in expected {
        assert_eq!(
            map.get(cid).map(Vec::as_slice),
            Some(&["succeeded".to_string()][..]),
            "{cid}: {:?}\n{}",
            map.get(cid),
            setup.daemon_log()
        );
    }
    assert_eq!(rows.len(), expected.len(), "no extra rows: {map:?}");
}

#[test]
fn appended_lines_and_a_file_appearing_during_the_run_are_joined() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let mut expected = write_ops(&setup, "append", 0..20, "logs/gateway.log");
    std::thread::sleep(Duration::from_millis(300));
    // A new file matching the glob while running.
    expected.extend(write_ops(
        &setup,
        "newfile",
        0..10,
        "logs/gateway.log.extra",
    ));
    assert_exactly_once(&setup, &expected);
    assert_eq!(daemon.stop(), Some(0));
}

/// One daemon per data directory: a second one stops at once with a clear error, and the lock
/// dies with its holder, `kill -9` included.
#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused_until_the_first_is_gone() {
    let setup = Setup::new(CONFIG);
    let first = setup.start();
    let expected = write_ops(&setup, "lock", 0..3, "logs/gateway.log");
    assert_exactly_once(&setup, &expected);
    let second = setup.run_refused();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use by another scimwatch"), "{stderr}");
    first.kill9();
    let again = setup.start();
    let more = write_ops(&setup, "relock", 0..3, "logs/gateway.log");
    let mut all = expected;
    all.extend(more);
    assert_exactly_once(&setup, &all);
    assert_eq!(again.stop(), Some(0));
}

/// The daemon turns transparent huge pages off for itself (README "Performance": 2 MiB page
/// clears were 5–7% of a replay), and leaves them as they are when `MIMALLOC_ALLOW_THP` is set.
#[test]
fn transparent_huge_pages_are_off_unless_mimalloc_allow_thp_is_set() {
    let thp = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:").map(|v| v.trim().to_string()))
    };
    let Some(ours) = thp(std::process::id()) else {
        eprintln!("skipped: this kernel does not report THP_enabled");
        return;
    };
    for (allow, expected) in [(None, "0".to_string()), (Some("1"), ours)] {
        let setup = Setup::new(CONFIG);
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_scimwatch"));
        command
            .args(["run", "--config", setup.config().to_str().unwrap()])
            .env_remove("MIMALLOC_ALLOW_THP")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(allow) = allow {
            command.env("MIMALLOC_ALLOW_THP", allow);
        }
        let daemon = common::daemon::Daemon {
            child: command.spawn().unwrap(),
        };
        // Running once it serves its first committed rows: well past the start of `main`.
        let expected_ops = write_ops(&setup, "thp", 0..2, "logs/gateway.log");
        assert_exactly_once(&setup, &expected_ops);
        assert_eq!(
            thp(daemon.child.id()).as_deref(),
            Some(expected.as_str()),
            "MIMALLOC_ALLOW_THP={allow:?}"
        );
        assert_eq!(daemon.stop(), Some(0));
    }
}

/// 80 rotated logs of one source already there at a start, under `ulimit -n 64`: every
/// operation is joined once. The daemon keeps half its descriptors for itself, gives each
/// source its share of the rest, opens the oldest files first, closes each read to its end to
/// open the next, and merges nothing past a source whose files wait (helper-42: 34 files could
/// not be opened, and files let go after a failed listing were read again from 0; helper-47:
/// the IdP's rotations took every slot, and its operations were judged without the gateway's
/// log: unconfirmed, unattributed, and a false page).
#[test]
fn many_rotations_under_a_low_descriptor_limit_are_all_read_once() {
    // Both: each rotation holds 5 s of the operations, older the higher its number, so the
    // merge going on without a source's next rotation settles the other's operations
    // without their writes (it did once the source's open file was read to its end and not
    // yet merged: helper-51, 53,837 unattributed for replay's 2,385).
    for rotated in ["gateway", "idp", "both"] {
        let setup = Setup::new(CONFIG);
        let mut expected = Vec::new();
        for k in (0..=80).rev() {
            let suffix = if k == 0 {
                String::new()
            } else {
                format!(".{k}")
            };
            for i in 0..2 {
                let cid = format!("r{k}-{i}");
                let (idp, gw) = operation_lines_at(&cid, 5 * k + 2 - i);
                let (idp_file, gw_file) = match rotated {
                    "gateway" => (
                        "logs/idp.jsonl".to_string(),
                        format!("logs/gateway.log{suffix}"),
                    ),
                    "idp" => (
                        format!("logs/idp.jsonl{suffix}"),
                        "logs/gateway.log".to_string(),
                    ),
                    _ => (
                        format!("logs/idp.jsonl{suffix}"),
                        format!("logs/gateway.log{suffix}"),
                    ),
                };
                setup.append(&idp_file, &idp);
                setup.append(&gw_file, &gw);
                expected.push(cid);
            }
            // Rotated when its last line was written, as logrotate leaves it (written within
            // a few milliseconds, the files' order by modification time was a toss-up).
            for file in [
                format!("logs/idp.jsonl{suffix}"),
                format!("logs/gateway.log{suffix}"),
            ] {
                if k > 0 {
                    let at = std::time::SystemTime::now() - Duration::from_secs(5 * k as u64);
                    if let Ok(f) = std::fs::File::options()
                        .append(true)
                        .open(setup.path(&file))
                    {
                        f.set_modified(at).unwrap();
                    }
                }
            }
        }
        let child = std::process::Command::new("sh")
            .args(["-c", "ulimit -n 64 && exec \"$0\" run --config \"$1\""])
            .arg(env!("CARGO_BIN_EXE_scimwatch"))
            .arg(setup.config())
            .env("SCIMWATCH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(setup.path("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let daemon = common::daemon::Daemon { child };
        let rows = setup.wait_for(Duration::from_secs(90), |rows| rows.len() >= expected.len());
        let map = by_cid(&rows);
        let log = setup.daemon_log();
        for cid in &expected {
            assert_eq!(
                map.get(cid).map(Vec::as_slice),
                Some(&["succeeded".to_string()][..]),
                "{rotated}: {cid}\n{log}"
            );
        }
        assert_eq!(rows.len(), expected.len(), "{rotated}");
        assert!(log.contains("At the limit of open log files"), "{log}");
        assert!(!log.contains("Cannot open a log file"), "{log}");
        assert_eq!(daemon.stop(), Some(0));
    }
}

#[test]
fn rename_rotation_keeps_reading_the_old_file_to_its_end() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let mut expected = write_ops(&setup, "before", 0..10, "logs/gateway.log");
    // The writer still holds the old file when logrotate renames it, and writes once more.
    let mut old = std::fs::OpenOptions::new()
        .append(true)
        .open(setup.path("logs/gateway.log"))
        .unwrap();
    std::fs::rename(
        setup.path("logs/gateway.log"),
        setup.path("logs/gateway.log.1"),
    )
    .unwrap();
    let (idp, gw) = operation_lines("late-write");
    setup.append("logs/idp.jsonl", &idp);
    std::io::Write::write_all(&mut old, gw.as_bytes()).unwrap();
    drop(old);
    expected.push("late-write".into());
    expected.extend(write_ops(&setup, "after", 0..10, "logs/gateway.log"));
    assert_exactly_once(&setup, &expected);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn copytruncate_is_read_from_zero_and_its_copy_is_not_read_twice() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let mut expected = write_ops(&setup, "before", 0..15, "logs/gateway.log");
    std::thread::sleep(Duration::from_millis(500));
    std::fs::copy(
        setup.path("logs/gateway.log"),
        setup.path("logs/gateway.log.1"),
    )
    .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(setup.path("logs/gateway.log"))
        .unwrap();
    expected.extend(write_ops(&setup, "after", 0..15, "logs/gateway.log"));
    assert_exactly_once(&setup, &expected);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_deleted_file_is_read_to_its_end_and_its_recreation_is_a_new_file() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let mut expected = write_ops(&setup, "first", 0..10, "logs/gateway.log");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(setup.path("logs/gateway.log")).unwrap();
    expected.extend(write_ops(&setup, "second", 0..10, "logs/gateway.log"));
    assert_exactly_once(&setup, &expected);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_partial_line_waits_for_its_newline() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let (idp, gw) = operation_lines("split");
    setup.append("logs/idp.jsonl", &idp);
    let (first, second) = gw.split_at(gw.len() / 2);
    setup.append("logs/gateway.log", first);
    std::thread::sleep(Duration::from_millis(600)); // several polls see only half a line
    setup.append("logs/gateway.log", second);
    assert_exactly_once(&setup, &["split".to_string()]);
    assert_eq!(daemon.stop(), Some(0));
    assert!(
        !setup.daemon_log().contains("Line set aside"),
        "{}",
        setup.daemon_log()
    );
}

#[test]
fn a_10_mb_line_is_set_aside_once_and_the_next_line_is_read() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let (idp, gw) = operation_lines("after-huge");
    setup.append("logs/idp.jsonl", &idp);
    let huge = format!(
        "{{\"ts\":\"{}\",\"cid\":\"huge\",\"path\":\"{}\"}}\n",
        now(),
        "x".repeat(10 * 1024 * 1024)
    );
    setup.append("logs/gateway.log", &huge);
    setup.append("logs/gateway.log", &gw);
    assert_exactly_once(&setup, &["after-huge".to_string()]);
    assert_eq!(daemon.stop(), Some(0));
    let log = setup.daemon_log();
    assert_eq!(log.matches("reason=\"line_too_long\"").count(), 1, "{log}");
}

#[test]
fn a_high_risk_leaver_with_no_further_input_is_reported_overdue_on_time() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"stuck\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"root-admin@corp.example\",\"result\":\"failure\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"stuck\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-1\",\"status\":503,\"app\":\"vault\"}}\n"));
    // Nothing else is ever written: the 2-second deadline must pass on the wall clock alone.
    let start = std::time::Instant::now();
    while !setup.daemon_log().contains("Leaver overdue")
        && start.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = setup.daemon_log();
    assert!(
        log.contains("Leaver overdue: still not disabled.")
            && log.contains("user=root-admin@corp.example")
            && log.contains("high_risk=true"),
        "{log}"
    );
    assert_eq!(log.matches("Leaver overdue").count(), 1, "reported once");
    // The alert lifecycle pages once, and a restart (its state is in the checkpoint) does not
    // page again while the leaver is still not disabled.
    let start = std::time::Instant::now();
    while !setup.daemon_log().contains("alert=LeaverDisableOverdue")
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(daemon.stop(), Some(0));
    let daemon = setup.start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.stop(), Some(0));
    let log = setup.daemon_log();
    assert_eq!(
        log.matches("Alert firing.").count(),
        1,
        "one page across the restart: {log}"
    );
    assert!(log.contains("alert=LeaverDisableOverdue"), "{log}");
}

/// A disable retried and done before the deadline, but settled after it (a join window plus
/// the allowed lateness later), is not a breach: the daemon paged it and wrote a breached
/// `open` row, while replay rightly said disabled in time (QA helper-15: with the default
/// settings, every high-risk leaver disabled between 4 and 15 minutes in). Here the window is
/// 3 s, the lateness 1 s, the deadline 8 s, and the retry succeeds 6 s in.
#[test]
fn a_disable_done_in_time_but_settled_after_the_deadline_is_not_overdue() {
    let config = CONFIG
        .replace("join_window_secs = 1", "join_window_secs = 3")
        .replace("disable_within_secs = 2", "disable_within_secs = 8");
    let setup = Setup::new(&config);
    let daemon = setup.start();
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"try-1\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"root-admin@corp.example\",\"result\":\"failure\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"try-1\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-1\",\"status\":503,\"app\":\"vault\"}}\n"));
    std::thread::sleep(Duration::from_secs(6));
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"try-2\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"root-admin@corp.example\",\"result\":\"success\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"try-2\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-1\",\"status\":204,\"app\":\"vault\"}}\n"));
    let rows = wait_for_leavers(&setup, |rows| rows.iter().any(|r| r.state == "disabled"));
    let log = setup.daemon_log();
    assert_eq!(daemon.stop(), Some(0));
    assert!(!log.contains("Leaver overdue"), "{log}");
    assert!(!log.contains("alert=LeaverDisableOverdue"), "{log}");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].state.as_str(), rows[0].met_slo),
        ("disabled", Some(true))
    );
}

/// Waits (up to 20 s) until `ready` holds for the committed `leavers` rows.
fn wait_for_leavers(
    setup: &Setup,
    ready: impl Fn(&[scimwatch::audit::schema::LeaverRow]) -> bool,
) -> Vec<scimwatch::audit::schema::LeaverRow> {
    let start = std::time::Instant::now();
    loop {
        let rows = setup.leavers();
        if ready(&rows) || start.elapsed() > SETTLE {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A high-risk leaver still open past its deadline is evidence at once, not only once it is
/// disabled: a `leavers` row with state `open`, written once across a kill -9 and a restart.
/// When it is disabled its `disabled` row follows, and the quarter's pack holds the episode
/// once, as a breach.
#[test]
fn an_overdue_leaver_is_a_leavers_row_before_it_is_disabled() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"stuck\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"root-admin@corp.example\",\"result\":\"failure\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"stuck\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-1\",\"status\":503,\"app\":\"vault\"}}\n"));
    let rows = wait_for_leavers(&setup, |rows| !rows.is_empty());
    assert_eq!(rows.len(), 1, "{rows:?}\n{}", setup.daemon_log());
    let open = &rows[0];
    assert_eq!(
        (
            open.state.as_str(),
            open.met_slo,
            open.disabled_at,
            open.high_risk
        ),
        ("open", Some(false), None, true),
        "{open:?}"
    );
    assert_eq!(open.user_login.as_deref(), Some("root-admin@corp.example"));
    daemon.kill9();
    let daemon = setup.start();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(setup.leavers().len(), 1, "written once across kill -9");

    // A retry is answered 204: the episode closes, late.
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"retry\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"root-admin@corp.example\",\"result\":\"success\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"retry\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-1\",\"status\":204,\"app\":\"vault\"}}\n"));
    let rows = wait_for_leavers(&setup, |rows| rows.len() >= 2);
    assert_eq!(daemon.stop(), Some(0));
    let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states.len(), 2, "{rows:?}");
    assert!(
        states.contains(&"open") && states.contains(&"disabled"),
        "{states:?}"
    );

    let (pack, manifest) = export_quarter_of(&setup, &t);
    assert_eq!(manifest["files"]["leavers"]["rows"], 1, "{manifest}");
    assert_eq!(manifest["summary"]["leavers"]["breaches"], 1, "{manifest}");
    let packed = scimwatch::audit::export::read_leavers(&pack.join("leavers.parquet")).unwrap();
    assert_eq!(
        (packed[0].state.as_str(), packed[0].met_slo),
        ("disabled", Some(false))
    );
}

/// A leaver rehired after the deadline passed: the episode was written as a breached `open`
/// row, and the rehire cancels it (clarification 15: no latency, no breach). Its `cancelled`
/// row takes that one's place, and the quarter's pack holds no breach (QA helper-15: the pack
/// counted the `open` row as a breach, since a cancelled episode wrote no row).
#[test]
fn a_leaver_rehired_after_the_deadline_leaves_no_breach_in_the_pack() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"leave\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"root-admin@corp.example\",\"result\":\"failure\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"leave\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-1\",\"status\":503,\"app\":\"vault\"}}\n"));
    let rows = wait_for_leavers(&setup, |rows| !rows.is_empty());
    assert_eq!(
        rows.iter()
            .map(|r| (r.state.as_str(), r.met_slo))
            .collect::<Vec<_>>(),
        [("open", Some(false))]
    );
    let t2 = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t2}\",\"cid\":\"rehire\",\"action\":\"create\",\"app\":\"vault\",\"user\":\"root-admin@corp.example\",\"result\":\"success\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t2}\",\"cid\":\"rehire\",\"method\":\"POST\",\"path\":\"/scim/v2/Users\",\"status\":201,\"app\":\"vault\"}}\n"));
    let rows = wait_for_leavers(&setup, |rows| rows.len() >= 2);
    assert_eq!(daemon.stop(), Some(0));
    let mut states: Vec<(&str, Option<bool>)> =
        rows.iter().map(|r| (r.state.as_str(), r.met_slo)).collect();
    states.sort();
    assert_eq!(
        states,
        [("cancelled", None), ("open", Some(false))],
        "{rows:?}"
    );
    let (pack, manifest) = export_quarter_of(&setup, &t);
    assert_eq!(manifest["files"]["leavers"]["rows"], 0, "{manifest}");
    assert_eq!(manifest["summary"]["leavers"]["breaches"], 0, "{manifest}");
    let verified = common::run(&["export", "--verify", pack.to_str().unwrap()]);
    assert!(verified.status.success());
}

/// A leaver still inside its deadline when the pack is made is in it, open, from the daemon's
/// checkpoint (the store has a row for an open episode only once it is past its deadline, so
/// a daemon's pack left out every such leaver, even one whose disable had failed); once
/// disabled, the next pack holds its `disabled` row instead, once.
#[test]
fn a_pack_from_the_daemon_holds_the_leavers_still_inside_their_deadline() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"leave\",\"action\":\"deactivate\",\"app\":\"wiki\",\"user\":\"ann@corp.example\",\"result\":\"failure\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"leave\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-7\",\"status\":503,\"app\":\"wiki\"}}\n"));
    setup.wait_for(SETTLE, |rows| !rows.is_empty());
    assert_eq!(daemon.stop(), Some(0));
    assert!(setup.leavers().is_empty(), "no row in the store yet");
    let (pack, manifest) = export_quarter_of(&setup, &t);
    assert_eq!(manifest["files"]["leavers"]["rows"], 1, "{manifest}");
    assert_eq!(manifest["summary"]["leavers"]["open"], 1, "{manifest}");
    assert_eq!(manifest["summary"]["leavers"]["breaches"], 0, "{manifest}");
    let packed = scimwatch::audit::export::read_leavers(&pack.join("leavers.parquet")).unwrap();
    let row = &packed[0];
    assert_eq!(
        (row.state.as_str(), row.met_slo, row.high_risk),
        ("open", None, false),
        "{row:?}"
    );
    assert_eq!(row.user_login.as_deref(), Some("ann@corp.example"));
    assert!(row.as_of.is_some_and(|as_of| as_of >= row.initiated_at));
    let verified = common::run(&["export", "--verify", pack.to_str().unwrap()]);
    assert!(verified.status.success(), "{verified:?}");

    // Disabled after a restart: the next pack holds the `disabled` row alone.
    std::fs::remove_dir_all(&pack).unwrap();
    let daemon = setup.start();
    let t2 = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t2}\",\"cid\":\"retry\",\"action\":\"deactivate\",\"app\":\"wiki\",\"user\":\"ann@corp.example\",\"result\":\"success\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t2}\",\"cid\":\"retry\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-7\",\"status\":204,\"app\":\"wiki\"}}\n"));
    let rows = wait_for_leavers(&setup, |rows| !rows.is_empty());
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (pack, manifest) = export_quarter_of(&setup, &t);
    assert_eq!(manifest["files"]["leavers"]["rows"], 1, "{manifest}");
    assert_eq!(manifest["summary"]["leavers"]["open"], 0, "{manifest}");
    let packed = scimwatch::audit::export::read_leavers(&pack.join("leavers.parquet")).unwrap();
    assert_eq!(
        (packed[0].state.as_str(), packed[0].met_slo),
        ("disabled", Some(true))
    );

    // A checkpoint export cannot read (damaged, or another version's) does not stop it: it
    // says what the pack then lacks.
    std::fs::remove_dir_all(&pack).unwrap();
    std::fs::write(
        setup.path("data/state/checkpoint.json"),
        "{\"version\": 99}",
    )
    .unwrap();
    let output = common::run(&[
        "export",
        "--data",
        setup.path("data").to_str().unwrap(),
        "--quarter",
        &format!(
            "{}Q{}",
            &t[..4],
            (t[5..7].parse::<u32>().unwrap() - 1) / 3 + 1
        ),
        "--out",
        pack.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("only once past their deadline"),
        "{stderr}"
    );
}

/// A leaver already written overdue under one high-risk policy, and judged by a changed one
/// after a restart, gets a row with the new decision, which the pack keeps: the store and
/// every pack held the old one (not high-risk), while the daemon paged it as high-risk
/// (helper-61).
#[test]
fn a_leaver_judged_again_by_a_changed_policy_is_written_again() {
    let v1 = CONFIG.replace(
        "allowed_lateness_secs = 1\n",
        "allowed_lateness_secs = 1\nstandard_disable_within_secs = 2\n",
    );
    assert_ne!(v1, CONFIG);
    let setup = Setup::new(&v1);
    let daemon = setup.start();
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"leave\",\"action\":\"deactivate\",\"app\":\"wiki\",\"user\":\"ann@corp.example\",\"result\":\"failure\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"leave\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-7\",\"status\":503,\"app\":\"wiki\"}}\n"));
    let rows = wait_for_leavers(&setup, |rows| !rows.is_empty());
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(
        rows.iter()
            .map(|r| (r.state.as_str(), r.high_risk))
            .collect::<Vec<_>>(),
        [("open", false)]
    );
    let v2 = v1.replace(r#"apps = ["vault"]"#, r#"apps = ["vault", "wiki"]"#);
    assert_ne!(v2, v1);
    std::fs::write(setup.config(), v2).unwrap();
    let daemon = setup.start();
    let rows = wait_for_leavers(&setup, |rows| rows.len() >= 2);
    assert_eq!(daemon.stop(), Some(0));
    let mut written: Vec<(&str, bool, Option<bool>)> = (rows.iter())
        .map(|r| (r.state.as_str(), r.high_risk, r.met_slo))
        .collect();
    written.sort();
    assert_eq!(
        written,
        [("open", false, Some(false)), ("open", true, Some(false))],
        "{}",
        setup.daemon_log()
    );
    let (_, manifest) = export_quarter_of(&setup, &t);
    assert_eq!(manifest["files"]["leavers"]["rows"], 1, "{manifest}");
    assert_eq!(
        manifest["summary"]["leavers"]["high_risk_breaches"], 1,
        "{manifest}"
    );
}

/// An app alias added across a restart applies to what was pending: a leaver read under the
/// old spelling and still joining takes the app's name (and its high-risk policy), and an
/// open episode under it is the app's, closed by the app's disable, as `replay` with the new
/// config says. They kept the old name: the daemon and `replay` disagreed, the episode was
/// never closed and paged overdue (QA helper-60).
#[test]
fn an_alias_added_across_a_restart_applies_to_what_was_pending() {
    // carol is high-risk by her login: overdue, her `open` row is written under the old
    // spelling before the restart.
    let v1 = CONFIG
        .replace("join_window_secs = 1", "join_window_secs = 3")
        .replace(
            r#"apps = ["vault"]"#,
            "apps = [\"vault\"]\nusers = [\"carol@corp.example\"]",
        );
    assert_ne!(v1, CONFIG);
    let setup = Setup::new(&v1);
    let idp = |cid: &str, user: &str, result: &str, t: &str| {
        format!("{{\"ts\":\"{t}\",\"cid\":\"{cid}\",\"action\":\"deactivate\",\"app\":\"AWS Production\",\"user\":\"{user}\",\"result\":\"{result}\"}}\n")
    };
    let gateway = |cid: &str, status: u16, t: &str| {
        format!("{{\"ts\":\"{t}\",\"cid\":\"{cid}\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/{cid}\",\"status\":{status},\"app\":\"aws-prod\"}}\n")
    };
    let daemon = setup.start();
    // carol's disable fails and is judged: her episode is open, under "AWS Production".
    let t0 = now();
    setup.append(
        "logs/idp.jsonl",
        &idp("L0", "carol@corp.example", "failure", &t0),
    );
    setup.append("logs/gateway.log", &gateway("L0", 503, &t0));
    let rows = setup.wait_for(SETTLE, |rows| !rows.is_empty());
    assert_eq!(rows.len(), 1, "{}", setup.daemon_log());
    let overdue = wait_for_leavers(&setup, |rows| !rows.is_empty());
    assert_eq!(overdue.len(), 1, "{}", setup.daemon_log());
    assert_eq!(overdue[0].app, "AWS Production");
    // dave's is read, and still joining at the stop.
    let t1 = now();
    setup.append(
        "logs/idp.jsonl",
        &idp("L1", "dave@corp.example", "success", &t1),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(setup.operations().len(), 1, "dave's is pending");

    let v2 = v1.replace(r#"apps = ["vault"]"#, r#"apps = ["vault", "aws-prod"]"#)
        + "\n[apps]\naliases = { \"aws-prod\" = [\"AWS Production\"] }\n";
    std::fs::write(setup.config(), &v2).unwrap();
    setup.append("logs/gateway.log", &gateway("L1", 204, &t1));
    let t2 = now();
    setup.append(
        "logs/idp.jsonl",
        &idp("L0b", "carol@corp.example", "success", &t2),
    );
    setup.append("logs/gateway.log", &gateway("L0b", 204, &t2));
    let daemon = setup.start();
    // With when each began: carol's is the episode open across the restart, not a new one.
    let disabled = |rows: &[scimwatch::audit::schema::LeaverRow]| {
        let mut found: Vec<(String, String, i64, bool, Option<bool>)> = (rows.iter())
            .filter(|r| r.state == "disabled")
            .map(|r| {
                let user = r.user_login.clone().unwrap_or_default();
                (r.app.clone(), user, r.initiated_at, r.high_risk, r.met_slo)
            })
            .collect();
        found.sort();
        found
    };
    let rows = wait_for_leavers(&setup, |rows| disabled(rows).len() >= 2);
    assert_eq!(daemon.stop(), Some(0));
    let after_restart = |rows: Vec<scimwatch::audit::schema::OperationRow>| {
        let mut found: Vec<(String, String, String, bool)> = (rows.into_iter())
            .filter(|r| r.correlation_id.as_deref() != Some("L0"))
            .map(|r| {
                let cid = r.correlation_id.unwrap_or_default();
                (cid, r.app.unwrap_or_default(), r.outcome, r.high_risk)
            })
            .collect();
        found.sort();
        found
    };
    let replayed = setup.path("replayed");
    common::daemon::replay_into(&setup.config(), &replayed);
    let replay_ops = after_restart(common::daemon::read_dir_rows(&replayed.join("operations")));
    assert_eq!(
        replay_ops,
        [
            ("L0b".into(), "aws-prod".into(), "succeeded".into(), true),
            ("L1".into(), "aws-prod".into(), "succeeded".into(), true),
        ]
    );
    assert_eq!(after_restart(setup.operations()), replay_ops);
    let replay_leavers = disabled(&common::daemon::read_dir_leavers(&replayed.join("leavers")));
    assert_eq!(replay_leavers.len(), 2, "{replay_leavers:?}");
    assert_eq!(disabled(&rows), replay_leavers, "{}", setup.daemon_log());
    // The pack, made without --config, holds carol once, disabled: her `open` row under the
    // old spelling and her `disabled` row are one episode (QA helper-62: two, one still open).
    let (_, manifest) = export_quarter_of(&setup, &t0);
    let leavers = &manifest["summary"]["leavers"];
    assert_eq!(
        (&leavers["episodes"], &leavers["disabled"], &leavers["open"]),
        (&2.into(), &2.into(), &0.into()),
        "{manifest}"
    );
}

/// Two open episodes of one leaver under two spellings, both written overdue, become one
/// when an alias added across a restart makes the spellings one app: the younger's `open`
/// row is ended by a `cancelled` one, and the pack holds one leaver still open, as `replay`
/// with the new config says (helper-64, helper-66: two, both "still not disabled").
#[test]
fn two_overdue_episodes_merged_by_an_alias_are_one_in_the_pack() {
    let v1 = CONFIG.replace(
        r#"apps = ["vault"]"#,
        "apps = [\"vault\"]\nusers = [\"bob@corp.example\"]",
    );
    let setup = Setup::new(&v1);
    let daemon = setup.start();
    let t0 = now();
    for (cid, app) in [("A", "AWS Production"), ("B", "aws-prod")] {
        // A second apart: begun at the same instant, the two are one episode to a pack.
        let t0 = if cid == "A" {
            t0.clone()
        } else {
            std::thread::sleep(Duration::from_millis(1100));
            now()
        };
        setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t0}\",\"cid\":\"{cid}\",\"action\":\"deactivate\",\"app\":\"{app}\",\"user\":\"bob@corp.example\",\"result\":\"failure\"}}\n"));
        setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t0}\",\"cid\":\"{cid}\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/{cid}\",\"status\":503,\"app\":\"aws-prod\"}}\n"));
    }
    let rows = wait_for_leavers(&setup, |rows| rows.len() >= 2);
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(rows.len(), 2, "{}", setup.daemon_log());
    let v2 = v1 + "\n[apps]\naliases = { \"aws-prod\" = [\"AWS Production\"] }\n";
    std::fs::write(setup.config(), &v2).unwrap();
    let daemon = setup.start();
    let rows = wait_for_leavers(&setup, |rows| rows.iter().any(|r| r.state == "cancelled"));
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(
        rows.iter().filter(|r| r.state == "cancelled").count(),
        1,
        "{rows:?}\n{}",
        setup.daemon_log()
    );
    let (_, manifest) = export_quarter_of(&setup, &t0);
    let leavers = &manifest["summary"]["leavers"];
    assert_eq!(
        (&leavers["episodes"], &leavers["open"]),
        (&1.into(), &1.into()),
        "{manifest}"
    );
    let replayed = common::replay_json(&setup.config(), &[]);
    assert_eq!(replayed["leavers"]["episodes"], 1, "{replayed}");
}

/// An episode open under one spelling and the other spelling's disable of the same leaver,
/// which the daemon took for an episode of its own: once an alias added across a restart
/// makes the spellings one app, the restart ends the first at that disable, and the pack
/// holds one episode, disabled, begun at the first leave, as `replay` with the new config
/// says. Before: two for one disable when the first was written overdue, and when it was
/// not (still inside its deadline at the stop), one begun at the disable: a late leaver's
/// latency was cut to nothing.
#[test]
fn an_episode_ended_by_the_other_spelling_s_disable_is_one_in_the_pack() {
    let high_risk = CONFIG.replace(
        r#"apps = ["vault"]"#,
        "apps = [\"vault\"]\nusers = [\"bob@corp.example\"]",
    );
    ended_by_the_other_spelling_s_disable(&high_risk, true, false);
    ended_by_the_other_spelling_s_disable(CONFIG, false, false);
    // The restart also makes the app high-risk: the episode the merge ends is judged so
    // (QA helper-70: it kept the standard deadline, and its breach was missing).
    ended_by_the_other_spelling_s_disable(CONFIG, false, true);
}

/// [`an_episode_ended_by_the_other_spelling_s_disable_is_one_in_the_pack`] with `v1`, where
/// bob's first episode is past its deadline at the stop or not, and the restart makes the
/// app high-risk or not.
fn ended_by_the_other_spelling_s_disable(v1: &str, overdue: bool, high_risk_after: bool) {
    let setup = Setup::new(v1);
    let line = |cid: &str, app: &str, result: &str, status: u16, t: &str| {
        setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"{cid}\",\"action\":\"deactivate\",\"app\":\"{app}\",\"user\":\"bob@corp.example\",\"result\":\"{result}\"}}\n"));
        setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"{cid}\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/{cid}\",\"status\":{status},\"app\":\"aws-prod\"}}\n"));
    };
    let daemon = setup.start();
    let t0 = now();
    line("A", "AWS Production", "failure", 503, &t0);
    if overdue {
        wait_for_leavers(&setup, |rows| rows.iter().any(|r| r.state == "open"));
    } else {
        setup.wait_for(SETTLE, |rows| !rows.is_empty());
        std::thread::sleep(Duration::from_millis(2100));
    }
    line("B", "aws-prod", "success", 204, &now());
    let rows = wait_for_leavers(&setup, |rows| rows.iter().any(|r| r.state == "disabled"));
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(rows.len(), 1 + usize::from(overdue), "{rows:?}");
    let mut v2 = v1.to_string() + "\n[apps]\naliases = { \"aws-prod\" = [\"AWS Production\"] }\n";
    if high_risk_after {
        v2 = v2.replace(r#"apps = ["vault"]"#, r#"apps = ["vault", "aws-prod"]"#);
    }
    std::fs::write(setup.config(), &v2).unwrap();
    let daemon = setup.start();
    let rows = wait_for_leavers(&setup, |rows| {
        rows.iter().filter(|r| r.state == "disabled").count() >= 2
    });
    assert_eq!(daemon.stop(), Some(0));
    let disabled_at: Vec<_> = (rows.iter())
        .filter(|r| r.state == "disabled")
        .map(|r| r.disabled_at)
        .collect();
    assert_eq!(disabled_at[0], disabled_at[1], "{rows:?}");
    let (pack, manifest) = export_quarter_of(&setup, &t0);
    let leavers = &manifest["summary"]["leavers"];
    assert_eq!(
        (&leavers["episodes"], &leavers["disabled"], &leavers["open"]),
        (&1.into(), &1.into(), &0.into()),
        "{manifest}"
    );
    let row = &scimwatch::audit::export::read_leavers(&pack.join("leavers.parquet")).unwrap()[0];
    assert_eq!(row.app, "aws-prod");
    assert_eq!(row.correlation_ids, ["A", "B"]);
    assert_eq!(row.disabled_by.as_deref(), Some("B"));
    assert!(row.latency_seconds.unwrap() > 2.0, "{row:?}");
    let high_risk = overdue || high_risk_after;
    assert_eq!(
        (row.high_risk, row.met_slo),
        (high_risk, Some(!high_risk)),
        "{row:?}"
    );
    let replayed = common::replay_json(&setup.config(), &[]);
    let leavers = &replayed["leavers"];
    assert_eq!(leavers["breaches"], u64::from(high_risk), "{replayed}");
    assert_eq!(
        (&leavers["episodes"], &leavers["disabled"]),
        (&1.into(), &1.into()),
        "{replayed}"
    );
    assert_eq!(
        leavers["latency_seconds"]["max"].as_f64(),
        row.latency_seconds,
        "{replayed}"
    );
}

/// `[source.stages]` changed across a restart apply to the IdP records still joining: a
/// `suspend` read as a leaver and moved to the movers is a mover, with no episode and no
/// page, as `replay` with the new config says (QA helper-67: a leaver, paged overdue).
#[test]
fn changed_stages_apply_to_the_records_still_joining() {
    let v1 = CONFIG.replace("join_window_secs = 1", "join_window_secs = 3");
    let setup = Setup::new(&v1);
    let daemon = setup.start();
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"S1\",\"action\":\"suspend\",\"app\":\"vault\",\"user\":\"ivy@corp.example\",\"result\":\"failure\"}}\n"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(setup.operations().len(), 0, "still joining at the stop");
    let v2 = v1.replace(
        "status = \"/result\"\n",
        "status = \"/result\"\n[source.stages]\nmover = [\"update\", \"suspend\"]\nleaver = [\"deactivate\"]\n",
    );
    assert_ne!(v1, v2);
    std::fs::write(setup.config(), &v2).unwrap();
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"S1\",\"method\":\"PATCH\",\"path\":\"/scim/v2/Users/S1\",\"status\":500,\"app\":\"vault\"}}\n"));
    let daemon = setup.start();
    let rows = setup.wait_for(SETTLE, |rows| !rows.is_empty());
    // Past the 2 s deadline a leaver would have had.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(daemon.stop(), Some(0));
    let stages: Vec<(String, String)> = (rows.iter())
        .map(|r| (r.stage.clone(), r.outcome.clone()))
        .collect();
    assert_eq!(
        stages,
        [("mover".to_string(), "failed".to_string())],
        "{}",
        setup.daemon_log()
    );
    assert_eq!(setup.leavers(), [], "{}", setup.daemon_log());
    assert!(
        setup.daemon_log().contains("restaged=1"),
        "{}",
        setup.daemon_log()
    );
    let replayed = common::replay_json(&setup.config(), &[]);
    assert_eq!(replayed["stages"]["mover"]["operations"], 1, "{replayed}");
    assert_eq!(replayed["leavers"]["episodes"], 0, "{replayed}");
}

/// A source renamed in place, or taken out from the end, across a restart: the start says
/// what becomes of what was read from it and is still pending (QA helper-67: nothing was
/// said, and a source put in another's place took its pending records silently).
#[test]
fn a_source_renamed_or_taken_out_is_said_at_start() {
    let third = "\n[[source]]\nname = \"idp2\"\nrole = \"idp\"\nformat = \"json\"\npaths = [\"logs/idp2.jsonl*\"]\n[source.fields]\ntime = \"/ts\"\naction = \"/action\"\n";
    let setup = Setup::new(&(CONFIG.to_string() + third));
    let daemon = setup.start();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stop(), Some(0));
    let renamed = CONFIG.replace("name = \"gateway\"", "name = \"nginx\"");
    assert_ne!(renamed, CONFIG);
    std::fs::write(setup.config(), &renamed).unwrap();
    let daemon = setup.start();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stop(), Some(0));
    let log = setup.daemon_log();
    let line = |text: &str| {
        (log.lines().find(|l| l.contains(text)))
            .unwrap_or_else(|| panic!("{log}"))
            .to_string()
    };
    let renamed = line("A source was renamed in place");
    assert!(
        renamed.contains("was=gateway") && renamed.contains("now=nginx"),
        "{renamed}"
    );
    assert!(line("A source was taken out").contains("was=idp2"), "{log}");
}

/// A source's `correlation_id` mapping added across a restart cannot give the records read
/// before it an ID: the start warns, counting them (QA helper-67, helper-70: nothing was
/// said, and their operations ended unconfirmed where a replay joins them).
#[test]
fn a_correlation_id_mapping_added_with_records_pending_is_warned_of() {
    let v2 = CONFIG.replace("join_window_secs = 1", "join_window_secs = 5");
    let v1 = v2.replacen("correlation_id = \"/cid\"\n", "", 1);
    assert_ne!(v1, v2);
    let setup = Setup::new(&v1);
    let daemon = setup.start();
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"K1\",\"action\":\"create\",\"app\":\"wiki\",\"user\":\"kim@corp.example\",\"result\":\"success\"}}\n"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stop(), Some(0));
    std::fs::write(setup.config(), &v2).unwrap();
    let daemon = setup.start();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stop(), Some(0));
    let log = setup.daemon_log();
    let warning = (log.lines())
        .find(|l| l.contains("read before their source's correlation_id mapping was added"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(warning.contains("records=1"), "{warning}");
}

/// A spelling taken out of `[apps] aliases`, or moved to another app, cannot be given back to
/// what was read under it: the start says so, naming it.
#[test]
fn a_spelling_taken_out_of_the_aliases_is_warned_of() {
    let aliases = "\n[apps]\naliases = { \"aws-prod\" = [\"AWS Production\", \"awsprod\"], \"gh\" = [\"GitHub\"] }\n";
    let setup = Setup::new(&(CONFIG.to_string() + aliases));
    let daemon = setup.start();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stop(), Some(0));
    assert!(!setup.daemon_log().contains("no longer give"));
    let changed = "\n[apps]\naliases = { \"aws-prod\" = [\"AWS Production\"], \"gh\" = [], \"code\" = [\"GitHub\"] }\n";
    std::fs::write(setup.config(), CONFIG.to_string() + changed).unwrap();
    let daemon = setup.start();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.stop(), Some(0));
    let log = setup.daemon_log();
    let warning = log
        .lines()
        .find(|l| l.contains("no longer give these spellings"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        warning.contains("awsprod (was aws-prod)") && warning.contains("github (was gh, now code)"),
        "{warning}"
    );
    assert!(!warning.contains("aws production"), "{warning}");
}

/// `scimwatch export` of the quarter holding the time `t`, into `pack/`: where, and its manifest.
fn export_quarter_of(setup: &Setup, t: &str) -> (std::path::PathBuf, serde_json::Value) {
    let quarter = format!(
        "{}Q{}",
        &t[..4],
        (t[5..7].parse::<u32>().unwrap() - 1) / 3 + 1
    );
    let pack = setup.path("pack");
    let output = common::run(&[
        "export",
        "--data",
        setup.path("data").to_str().unwrap(),
        "--quarter",
        &quarter,
        "--out",
        pack.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest =
        serde_json::from_slice(&std::fs::read(pack.join("manifest.json")).unwrap()).unwrap();
    (pack, manifest)
}

#[test]
fn sigterm_commits_and_a_restart_resumes_without_rereading() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    let mut expected = write_ops(&setup, "one", 0..10, "logs/gateway.log");
    setup.wait_for(SETTLE, |rows| rows.len() >= 10);
    assert_eq!(daemon.stop(), Some(0));
    assert!(setup.path("data/state/checkpoint.json").exists());
    let daemon = setup.start();
    expected.extend(write_ops(&setup, "two", 0..10, "logs/gateway.log"));
    assert_exactly_once(&setup, &expected);
    assert_eq!(daemon.stop(), Some(0));
}

/// A lost checkpoint beside a store with rows: starting afresh would read every log from its
/// start and write every row again (a QA run doubled 20,526 rows to 41,052, silently). The
/// daemon refuses, names the way out, and the store is left as it was.
#[test]
fn a_store_with_rows_but_no_checkpoint_is_refused_rather_than_doubled() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    write_ops(&setup, "one", 0..10, "logs/gateway.log");
    setup.wait_for(SETTLE, |rows| rows.len() >= 10);
    assert_eq!(daemon.stop(), Some(0));
    std::fs::remove_file(setup.path("data/state/checkpoint.json")).unwrap();
    let output = setup.run_refused();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Parquet file(s) but no checkpoint")
            && stderr.contains("move the store aside"),
        "{stderr}"
    );
    assert_eq!(setup.operations().len(), 10);
}

/// An older checkpoint put back (from a backup) beside a store written past it: resuming would
/// read the logs again from its positions and write every row since a second time (QA: only a
/// missing checkpoint was caught). The daemon refuses, names the newer files, and the store is
/// left as it was; with the newest checkpoint back it resumes.
#[test]
fn a_checkpoint_older_than_the_store_is_refused_rather_than_doubled() {
    let setup = Setup::new(CONFIG);
    let daemon = setup.start();
    write_ops(&setup, "one", 0..10, "logs/gateway.log");
    setup.wait_for(SETTLE, |rows| rows.len() >= 10);
    assert_eq!(daemon.stop(), Some(0));
    let checkpoint = setup.path("data/state/checkpoint.json");
    let old = std::fs::read(&checkpoint).unwrap();
    let daemon = setup.start();
    write_ops(&setup, "two", 0..10, "logs/gateway.log");
    setup.wait_for(SETTLE, |rows| rows.len() >= 20);
    assert_eq!(daemon.stop(), Some(0));
    let newest = std::fs::read(&checkpoint).unwrap();
    std::fs::write(&checkpoint, &old).unwrap();
    let output = setup.run_refused();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the checkpoint is older than the store")
            && stderr.contains("newest: ")
            && stderr.contains(".parquet"),
        "{stderr}"
    );
    assert_eq!(setup.operations().len(), 20);
    std::fs::write(&checkpoint, &newest).unwrap();
    let daemon = setup.start();
    write_ops(&setup, "three", 0..5, "logs/gateway.log");
    setup.wait_for(SETTLE, |rows| rows.len() >= 25);
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(setup.operations().len(), 25);
}

/// A source that never speaks (a glob matching nothing) is silent since the daemon began to
/// watch it, across restarts: it was since the process's start, so every restart resolved its
/// SourceStale page and paged again later (QA helper-14, F2). Its gauge, which the
/// SourceStale rule reads, holds the same time after a restart.
#[test]
fn a_never_seen_source_stays_silent_since_it_was_first_watched_across_a_restart() {
    let port = common::free_port();
    let config = CONFIG.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    ) + "\n[[source]]\nname = \"hr\"\nrole = \"gateway\"\nformat = \"nginx_json\"\npaths = [\"logs/hr-*.log\"]\n";
    let setup = Setup::new(&config);
    let gauge = || {
        let (_, metrics) = common::get(port, "/metrics", None);
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("scimwatch_source_last_event_timestamp_seconds{source=\"hr\"} ")
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let daemon = setup.start();
    write_ops(&setup, "one", 0..3, "logs/gateway.log");
    setup.wait_for(SETTLE, |rows| rows.len() >= 3);
    common::wait_until(Duration::from_secs(10), || gauge().is_some());
    let first = gauge().expect("the gauge of a silent source");
    assert_eq!(daemon.stop(), Some(0));
    let daemon = setup.start();
    common::wait_until(Duration::from_secs(10), || gauge().is_some());
    assert_eq!(gauge(), Some(first));
    assert_eq!(daemon.stop(), Some(0));
}

/// At a memory cap every pass evicts: the evictions are a metric, and the warning comes at most
/// once a minute with the counts since (a QA run with `max_pending_joins` = 50 logged 46,000
/// warnings, 6 MB, in six minutes, and no metric showed what was dropped).
#[test]
fn a_memory_cap_s_evictions_are_counted_and_warned_about_once_a_minute() {
    let port = common::free_port();
    let config = CONFIG
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace("[pipeline]\n", "[pipeline]\nmax_pending_joins = 5\n");
    let setup = Setup::new(&config);
    let daemon = setup.start();
    let evicted = || {
        let (_, metrics) = common::get(port, "/metrics", None);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("scimwatch_evictions_total{kind=\"joins\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Three bursts of IdP records with no gateway answer, passes apart: each goes over the cap.
    for burst in 0..3 {
        let t = now();
        let mut idp = String::new();
        for i in 0..20 {
            idp.push_str(&format!("{{\"ts\":\"{t}\",\"cid\":\"cap-{burst}-{i}\",\"action\":\"update\",\"app\":\"wiki\",\"user\":\"u{i}@corp.example\",\"result\":\"success\"}}\n"));
        }
        setup.append("logs/idp.jsonl", &idp);
        common::wait_until(Duration::from_secs(10), || {
            evicted() >= 15.0 * f64::from(burst + 1)
        });
    }
    assert!(evicted() >= 45.0, "{}", evicted());
    assert_eq!(daemon.stop(), Some(0));
    let log = setup.daemon_log();
    assert_eq!(log.matches("Memory cap reached").count(), 1, "{log}");
}

/// `run` on Entra's provisioning log, its audit log as the trigger source and Envoy's access
/// log (the vendor fixture): the leaver rows it commits are `replay`'s, the audit log's
/// "Disable account" starting ada's clock 39 minutes before Entra's cycle disabled her.
#[test]
fn the_daemon_times_leavers_from_entra_s_audit_log_as_replay_does() {
    let (setup, replayed) = fixture_daemon(
        "vendors/entra",
        "with-audit.toml",
        &["provisioning.jsonl", "audit.jsonl", "envoy-access.log"],
    );
    let key = |r: &scimwatch::audit::schema::LeaverRow| {
        (
            r.app.clone(),
            r.user_login.clone(),
            r.initiated_at,
            r.disabled_at,
            r.met_slo,
            r.state.clone(),
        )
    };
    let mut want: Vec<_> = common::daemon::read_dir_leavers(&replayed.join("leavers"))
        .iter()
        .map(key)
        .collect();
    want.sort();
    assert_eq!(want.len(), 2, "{want:?}");
    let ada = want
        .iter()
        .find(|k| k.1.as_deref() == Some("ada@corp.example"))
        .unwrap();
    assert_eq!(ada.4, Some(false), "ada's 2,332 s broke acme's 15 minutes");

    let daemon = setup.start();
    common::wait_until(SETTLE, || setup.leavers().len() >= want.len());
    assert_eq!(daemon.stop(), Some(0));
    let mut got: Vec<_> = setup.leavers().iter().map(key).collect();
    got.sort();
    assert_eq!(got, want, "{}", setup.daemon_log());
}

/// The daemon commits post-disable activity to its store as `replay` does: alice's token
/// calling aws-prod 17 minutes after her disable (the core fixture) is a row of
/// `post_disable_activity`, not only a page and a log line (QA helper-30: it was in no table,
/// so an evidence pack could not show a leaver still using an API token).
#[test]
fn the_daemon_stores_post_disable_activity_as_replay_does() {
    let (setup, replayed) = fixture_daemon(
        "core",
        "scimwatch.toml",
        &["idp.jsonl", "gateway.jsonl", "hr.jsonl"],
    );
    let read = |dir: &std::path::Path| {
        let mut rows = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(entry.path()).unwrap().flatten() {
                // Committed files only (a temporary is hidden until renamed).
                let name = file.file_name().to_string_lossy().into_owned();
                if name.ends_with(".parquet") && !name.starts_with('.') {
                    rows.extend(scimwatch::audit::export::read_post_disable(&file.path()).unwrap());
                }
            }
        }
        rows
    };
    let want = read(&replayed.join("post_disable_activity"));
    assert_eq!(want.len(), 1, "{want:?}");
    assert_eq!(want[0].user, "alice@corp.example");

    let daemon = setup.start();
    let store = setup.path("data/post_disable_activity");
    common::wait_until(SETTLE, || !read(&store).is_empty());
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(read(&store), want, "{}", setup.daemon_log());
}

/// A daemon's setup on a fixture's config and logs (under `logs/`, polled every 50 ms,
/// checkpointed every second), and the store `replay` writes from the same logs.
fn fixture_daemon(dir: &str, config: &str, logs: &[&str]) -> (Setup, std::path::PathBuf) {
    let fixture = common::fixture(dir);
    let config = std::fs::read_to_string(fixture.join(config))
        .unwrap()
        .replace("paths = [\"", "paths = [\"logs/");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"data\"\n[pipeline]\npoll_interval_ms = 50\ncheckpoint_interval_secs = 1\n{config}"
    );
    let setup = Setup::new(&config);
    for file in logs {
        std::fs::copy(fixture.join(file), setup.path(&format!("logs/{file}"))).unwrap();
    }
    let replayed = setup.path("replayed");
    common::daemon::replay_into(&setup.config(), &replayed);
    (setup, replayed)
}
