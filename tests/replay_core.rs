//! `scimwatch replay` on hand-written fixture logs (tests/fixtures/core): every definition of
//! design.md, checked on the JSON report the real binary prints.

mod common;

use common::{fixture, replay_json, run};
use serde_json::{json, Value};

fn report() -> Value {
    replay_json(&fixture("core/scimwatch.toml"), &[])
}

#[test]
fn stage_counts_follow_the_last_attempt_and_the_idp_claim() {
    let r = report();
    // joiners: 201, early 201 and the rehire succeed; 400 401 403 409 500 504 fail.
    assert_eq!(
        r["stages"]["joiner"],
        json!({"operations": 9, "succeeded": 3, "failed": 6, "unconfirmed": 0, "success_rate": 3.0 / 9.0, "status": "incident"})
    );
    // movers: the 429-429-200 retry and the disagreeing 200 succeed; 404 and the IdP's own
    // failure fail; the claimed update nobody saw is unconfirmed; the skip is not counted.
    assert_eq!(
        r["stages"]["mover"],
        json!({"operations": 5, "succeeded": 2, "failed": 2, "unconfirmed": 1, "success_rate": 0.4, "status": "incident"})
    );
    assert_eq!(
        r["stages"]["leaver"],
        json!({"operations": 8, "succeeded": 6, "failed": 2, "unconfirmed": 0, "success_rate": 0.75, "status": "incident"})
    );
    assert_eq!(r["skipped"], 1);
}

#[test]
fn every_failure_has_exactly_one_cause() {
    let r = report();
    let causes = &r["causes"];
    for (cause, count) in [
        ("bad_request", 1),
        ("unauthorized", 1),
        ("forbidden", 2), // j-403 and l-dave
        ("not_found", 1),
        ("conflict", 1),
        ("server_error", 2), // j-500 and l-bob-1
        ("timeout", 1),
        ("rate_limited", 0), // the 429s were retried into a 200
        ("idp_error", 1),
        ("unconfirmed", 1),
    ] {
        assert_eq!(causes[cause], count, "cause {cause}");
    }
    let total: u64 = causes
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let failed_or_unconfirmed: u64 = ["joiner", "mover", "leaver"]
        .iter()
        .map(|s| {
            r["stages"][s]["failed"].as_u64().unwrap()
                + r["stages"][s]["unconfirmed"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(total, failed_or_unconfirmed);
    let top = &r["top_causes"][0];
    assert!(
        top["hint"].as_str().unwrap().len() > 20,
        "causes carry a hint: {top}"
    );
}

#[test]
fn disagreements_and_unattributed_writes_are_counted_apart_from_success() {
    let r = report();
    assert_eq!(
        r["disagreements"], 2,
        "IdP success vs 401, IdP failure vs 200"
    );
    let samples: Vec<&str> = r["disagreement_samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["correlation_id"].as_str().unwrap())
        .collect();
    assert_eq!(samples, ["j-401", "m-disagree"]);
    // The hand-made PATCH with no IdP record; the GET is a read and never unattributed.
    assert_eq!(r["unattributed"], 1);
    let sample = &r["unattributed_samples"][0];
    assert_eq!(sample["path"], "/scim/v2/Users/u-rogue");
    assert_eq!(
        sample["stage"], "leaver",
        "active \"False\" makes it a disable"
    );
}

#[test]
fn leaver_episodes_measure_latency_across_retries_ids_and_triggers() {
    let r = report();
    let leavers = &r["leavers"];
    assert_eq!(
        leavers["episodes"], 7,
        "erin twice (rehired), frank, alice, bob, carol, dave"
    );
    assert_eq!(leavers["disabled"], 6);
    assert_eq!(leavers["open"], 1);
    assert_eq!(leavers["breaches"], 3);
    // Closed latencies: 2, 2, 5, 180, 962 (carol, from the HR trigger), 1320 (bob, two IDs).
    assert_eq!(
        leavers["latency_seconds"],
        json!({"p50": 5.0, "p95": 1320.0, "p99": 1320.0, "max": 1320.0})
    );
    let breached = leavers["breached"].as_array().unwrap();
    let carol = &breached[0];
    assert_eq!(carol["user"], "carol@corp.example");
    assert_eq!(
        carol["initiated_at"], "2026-07-01T09:19:00Z",
        "the HR termination starts the clock"
    );
    assert_eq!(carol["latency_seconds"], 962.0);
    let bob = &breached[1];
    assert_eq!(bob["correlation_ids"], json!(["l-bob-1", "l-bob-2"]));
    assert_eq!(bob["latency_seconds"], 1320.0);
    assert_eq!(bob["high_risk"], true);
    let dave = &breached[2];
    assert_eq!(dave["user"], "dave@corp.example");
    assert_eq!(
        dave["disabled_at"],
        Value::Null,
        "never disabled: breached at as_of"
    );
    assert_eq!(dave["state"], "open");
}

#[test]
fn a_fast_high_risk_leaver_is_not_a_breach() {
    let r = report();
    let users: Vec<&str> = r["leavers"]["breached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["user"].as_str().unwrap())
        .collect();
    assert!(
        !users.contains(&"alice@corp.example"),
        "alice was disabled in 3 minutes"
    );
}

#[test]
fn as_of_can_be_moved_back_before_the_open_leaver_was_due() {
    let r = replay_json(
        &fixture("core/scimwatch.toml"),
        &["--as-of", "2026-07-01T09:40:00Z"],
    );
    assert_eq!(r["as_of"], "2026-07-01T09:40:00Z");
    let users: Vec<&str> = r["leavers"]["breached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["user"].as_str().unwrap())
        .collect();
    assert!(
        !users.contains(&"dave@corp.example"),
        "10 minutes open is within 15: {users:?}"
    );
    // The logs go on past that instant, and everything read is counted: the run says so.
    let config = fixture("core/scimwatch.toml");
    let output = run(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--as-of",
        "2026-07-01T09:40:00Z",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: --as-of 2026-07-01T09:40:00Z is before the newest event read"),
        "{stderr}"
    );
}

#[test]
fn requests_as_a_disabled_user_are_post_disable_activity_in_any_case() {
    let r = report();
    let activity = r["post_disable_activity"].as_array().unwrap();
    // alice at 09:21 was still enabled; ALICE at 09:40 was not; erin at 10:00 had been rehired.
    assert_eq!(activity.len(), 1, "{activity:?}");
    assert_eq!(activity[0]["user"], "alice@corp.example");
    assert_eq!(activity[0]["app"], "aws-prod");
    assert_eq!(activity[0]["time"], "2026-07-01T09:40:00Z");
    assert_eq!(activity[0]["correlation_id"], "req-2");
}

#[test]
fn malformed_lines_are_counted_by_source_and_reason_and_located() {
    let r = report();
    assert_eq!(
        r["parse_errors"],
        json!({"orchestrator": 4, "gateway": 1, "hr": 0})
    );
    assert_eq!(
        r["parse_errors_by_reason"]["orchestrator"],
        json!({"invalid_utf8": 1, "invalid_json": 2, "bad_time": 1})
    );
    let first = &r["parse_error_samples"][0];
    assert!(
        first["file"].as_str().unwrap().ends_with("gateway.jsonl"),
        "{first}"
    );
    assert_eq!(first["line"], 28);
    // as_of is the newest parsed line of any source, even an unmapped action.
    assert_eq!(r["as_of"], "2026-07-01T10:30:00Z");
}

#[test]
fn secrets_in_the_logs_never_reach_the_report() {
    for format in ["json", "text"] {
        let output = run(&[
            "replay",
            "--config",
            fixture("core/scimwatch.toml").to_str().unwrap(),
            "--format",
            format,
        ]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(!text.contains("Sup3rSecret!"), "{format}");
        assert!(!text.contains("tok_live_998877"), "{format}");
        assert!(!text.contains("tok_live_112233"), "{format}");
    }
}

#[test]
fn the_text_report_leads_with_stage_health_and_names_breached_leavers() {
    let output = run(&[
        "replay",
        "--config",
        fixture("core/scimwatch.toml").to_str().unwrap(),
    ]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("joiner        9         3       6           0    33.3%  INCIDENT"),
        "{text}"
    );
    assert!(text.contains("HIGH-RISK aws-prod / dave@corp.example"));
    assert!(text.contains("STILL NOT DISABLED"));
    assert!(text.contains("SCIM token expired or revoked"));
    assert!(
        text.contains("idp.jsonl:27"),
        "bad lines are located by file:line"
    );
}

#[test]
fn an_over_long_line_is_counted_once_and_the_lines_around_it_survive() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(fixture("core/scimwatch.toml"))
        .unwrap()
        .replace(
            "paths = [\"idp.jsonl\"]",
            "paths = [\"idp.jsonl\"]\nmax_line_bytes = 4096",
        )
        .replace("paths = [\"hr.jsonl\"]", "paths = []");
    std::fs::write(dir.path().join("scimwatch.toml"), config).unwrap();
    let long = format!(
        r#"{{"ts":"2026-07-01T09:00:30Z","cid":"huge","action":"create","error":"{}"}}"#,
        "x".repeat(10 * 1024 * 1024)
    );
    let idp = [
        r#"{"ts":"2026-07-01T09:00:00Z","cid":"a","action":"create","app":"slack","user":"a@x","result":"success"}"#,
        long.as_str(),
        r#"{"ts":"2026-07-01T09:01:00Z","cid":"b","action":"create","app":"slack","user":"b@x","result":"success"}"#,
    ]
    .join("\n");
    std::fs::write(dir.path().join("idp.jsonl"), idp).unwrap();
    std::fs::write(
        dir.path().join("gateway.jsonl"),
        "{\"ts\":\"2026-07-01T09:00:01Z\",\"cid\":\"a\",\"method\":\"POST\",\"path\":\"/Users\",\"status\":201}\n{\"ts\":\"2026-07-01T09:01:01Z\",\"cid\":\"b\",\"method\":\"POST\",\"path\":\"/Users\",\"status\":201}\n",
    )
    .unwrap();
    let r = replay_json(&dir.path().join("scimwatch.toml"), &[]);
    assert_eq!(
        r["parse_errors_by_reason"]["orchestrator"],
        json!({"line_too_long": 1})
    );
    assert_eq!(r["parse_error_samples"][0]["line"], 2);
    assert_eq!(
        r["stages"]["joiner"]["succeeded"], 2,
        "the lines before and after the 10 MB line are read"
    );
}

/// One gateway line from the year 9999 moved the engine's clock there: every join after it
/// settled at once (three of five leavers unconfirmed, three false breaches). Now it is a bad
/// line (`bad_time`, with its file, line and offset) and the rest join as if it were absent.
/// A directory with a config for `idp.jsonl` (generic JSON: `at`, `cid`, `action`, `status`,
/// `user`, `app`) and `gw.log` (nginx JSON), judging from one operation on.
fn small_config() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scimwatch.toml");
    std::fs::write(
        &config,
        "[[source]]\nname = \"idp\"\nrole = \"idp\"\nformat = \"json\"\npaths = [\"idp.jsonl\"]\n\
         [source.fields]\ntime = \"/at\"\ncorrelation_id = \"/cid\"\naction = \"/action\"\n\
         status = \"/status\"\nuser_login = \"/user\"\napp = \"/app\"\n\
         [[source]]\nname = \"nginx\"\nrole = \"gateway\"\nformat = \"nginx_json\"\npaths = [\"gw.log\"]\n\
         [slo]\nmin_operations = 1\n",
    )
    .unwrap();
    (dir, config)
}

#[test]
fn a_line_from_the_far_future_is_a_bad_line_not_the_clock() {
    let (dir, config) = small_config();
    let (mut idp, mut gw) = (String::new(), String::new());
    for i in 0..5 {
        idp.push_str(&format!("{{\"at\":\"2026-07-01T09:0{i}:00Z\",\"cid\":\"c{i}\",\"action\":\"disable\",\"user\":\"u{i}@x\",\"status\":\"success\",\"app\":\"acme\"}}\n"));
        gw.push_str(&format!("{{\"time\":\"2026-07-01T09:0{i}:01Z\",\"xrid\":\"c{i}\",\"method\":\"PATCH\",\"uri\":\"/scim/v2/Users/u{i}\",\"status\":200,\"app\":\"acme\",\"request_body\":\"{{\\\"Operations\\\":[{{\\\"op\\\":\\\"replace\\\",\\\"path\\\":\\\"active\\\",\\\"value\\\":false}}]}}\"}}\n"));
        if i == 1 {
            gw.push_str("{\"time\":\"9999-12-31T23:59:59Z\",\"xrid\":\"bogus\",\"method\":\"GET\",\"uri\":\"/health\",\"status\":200,\"app\":\"acme\"}\n");
            // An epoch in microseconds, which `auto` once read as milliseconds (year 58467).
            gw.push_str("{\"time\":1782896461000000,\"xrid\":\"us\",\"method\":\"GET\",\"uri\":\"/health\",\"status\":200,\"app\":\"acme\"}\n");
        }
    }
    std::fs::write(dir.path().join("idp.jsonl"), idp).unwrap();
    std::fs::write(dir.path().join("gw.log"), gw).unwrap();
    let r = replay_json(&config, &[]);
    assert_eq!(r["as_of"], "2026-07-01T09:04:01Z", "{r:#}");
    assert_eq!(r["stages"]["leaver"]["succeeded"], 5, "{r:#}");
    assert_eq!(r["parse_errors_by_reason"]["nginx"], json!({"bad_time": 1}));
    let sample = &r["parse_error_samples"][0];
    assert_eq!(
        (&sample["line"], &sample["reason"]),
        (&json!(3), &json!("bad_time"))
    );
    assert!(
        sample["detail"].as_str().unwrap().contains("9999-12-31"),
        "{sample}"
    );
}

/// Clarification 11: latency quantiles to 3 significant digits. They were recorded in whole
/// seconds into a histogram that clamped past 2,047 (`saturating_record` never grows): these
/// leavers read p50 1 s and p95 2 s, for latencies of 0.834 s and of three hours and two days.
#[test]
fn leaver_latency_quantiles_keep_milliseconds_and_hours() {
    let (dir, config) = small_config();
    let (mut idp, mut gw) = (String::new(), String::new());
    let mut disable = |cid: &str, user: &str, at: &str, answered: &str, status: u16| {
        let ok = if status < 300 { "success" } else { "failure" };
        idp.push_str(&format!("{{\"at\":\"{at}\",\"cid\":\"{cid}\",\"action\":\"disable\",\"user\":\"{user}@x\",\"status\":\"{ok}\",\"app\":\"acme\"}}\n"));
        gw.push_str(&format!("{{\"time\":\"{answered}\",\"xrid\":\"{cid}\",\"method\":\"PATCH\",\"uri\":\"/scim/v2/Users/{user}\",\"status\":{status},\"app\":\"acme\",\"request_body\":\"{{\\\"Operations\\\":[{{\\\"op\\\":\\\"replace\\\",\\\"path\\\":\\\"active\\\",\\\"value\\\":false}}]}}\"}}\n"));
    };
    for user in ["a", "b", "c"] {
        let cid = format!("fast-{user}");
        disable(
            &cid,
            user,
            "2026-07-01T09:00:00Z",
            "2026-07-01T09:00:00.834Z",
            200,
        );
    }
    // Failed, then done by a second operation three hours and two days on.
    disable(
        "slow-1",
        "d",
        "2026-07-01T09:00:00Z",
        "2026-07-01T09:00:01Z",
        500,
    );
    disable(
        "slow-2",
        "d",
        "2026-07-01T12:00:00Z",
        "2026-07-01T12:00:00.5Z",
        200,
    );
    disable(
        "slower-1",
        "e",
        "2026-07-01T09:00:00Z",
        "2026-07-01T09:00:01Z",
        500,
    );
    disable(
        "slower-2",
        "e",
        "2026-07-03T09:00:00Z",
        "2026-07-03T09:00:00.5Z",
        200,
    );
    std::fs::write(dir.path().join("idp.jsonl"), idp).unwrap();
    std::fs::write(dir.path().join("gw.log"), gw).unwrap();
    let r = replay_json(&config, &[]);
    assert_eq!(r["leavers"]["disabled"], 5, "{r:#}");
    assert_eq!(
        r["leavers"]["latency_seconds"],
        json!({"p50": 0.834, "p95": 172_800.5, "p99": 172_800.5, "max": 172_800.5}),
        "{r:#}"
    );
}

/// A caller fills the correlation ID: one that holds a credential (`Bearer …`, a client's
/// mistake) reached pages, `/api/v1/alerts` and the report's samples (QA helper-14). It is a
/// stand-in from the parser on, the same on both sides, so the operation still joins.
#[test]
fn a_credential_in_a_correlation_id_never_reaches_the_report_and_still_joins() {
    let (dir, config) = small_config();
    std::fs::write(
        dir.path().join("idp.jsonl"),
        "{\"at\":\"2026-07-01T09:00:00Z\",\"cid\":\"Bearer CIDSECRET777\",\"action\":\"update\",\"user\":\"a@x\",\"status\":\"success\",\"app\":\"acme\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("gw.log"),
        "{\"time\":\"2026-07-01T09:00:01Z\",\"xrid\":\"Bearer CIDSECRET777\",\"method\":\"PATCH\",\"uri\":\"/scim/v2/Users/u1\",\"status\":200,\"app\":\"acme\"}\n\
         {\"time\":\"2026-07-01T09:00:02Z\",\"xrid\":\"Bearer CIDSECRET778\",\"method\":\"PATCH\",\"uri\":\"/scim/v2/Users/u2\",\"status\":200,\"app\":\"acme\"}\n",
    )
    .unwrap();
    let r = replay_json(&config, &[]);
    let text = r.to_string();
    assert!(!text.contains("CIDSECRET"), "{r:#}");
    assert_eq!(r["stages"]["mover"]["succeeded"], 1, "{r:#}");
    assert_eq!(r["unattributed"], 1, "{r:#}");
    let sample = r["unattributed_samples"][0]["correlation_id"]
        .as_str()
        .unwrap();
    assert!(sample.starts_with("[REDACTED:"), "{sample}");
}
