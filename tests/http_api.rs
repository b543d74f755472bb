//! The daemon's HTTP side on a real port: health, readiness, the JSON API (with its bearer
//! token and its 404s) and `/metrics`, which `promtool check metrics` must accept.

mod common;

use common::daemon::{now, Setup, CONFIG};
use common::{free_port, get, get_with, wait_until};
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn the_api_follows_an_operation_and_guards_its_data_with_a_token() {
    let port = free_port();
    let config = CONFIG.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\"\napi_token_file = \"token\""),
    );
    let setup = Setup::new(&config);
    std::fs::write(setup.path("token"), "s3cret-token\n").unwrap();
    let daemon = setup.start();
    wait_until(Duration::from_secs(10), || {
        get(port, "/readyz", None).0 == 200
    });
    assert_eq!(get(port, "/healthz", None), (200, "ok\n".to_string()));
    // `/` says where to look, without a token and without data.
    let (status, index) = get(port, "/", None);
    assert_eq!(status, 200);
    assert!(
        index.contains("/metrics") && index.contains("/api/v1/leavers/open"),
        "{index}"
    );

    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"op-1\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"ada@corp.example\",\"result\":\"success\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"op-1\",\"method\":\"PATCH\",\"path\":\"/scim/v2/Users/u-1\",\"status\":429,\"app\":\"vault\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"op-1\",\"method\":\"PATCH\",\"path\":\"/scim/v2/Users/u-1\",\"status\":401,\"app\":\"vault\"}}\n"));
    // A bad line is counted by reason; a blank one is not a line read (as in `replay`).
    setup.append("logs/idp.jsonl", "not json\n\n");
    wait_until(Duration::from_secs(15), || {
        get(port, "/api/v1/operations/op-1", Some("s3cret-token")).0 == 200
    });

    // No token, or a wrong one: 401 and no data.
    for token in [None, Some("wrong")] {
        let (status, body) = get(port, "/api/v1/operations/op-1", token);
        assert_eq!(status, 401, "{body}");
        assert!(
            !body.contains("ada@corp.example") && body.contains("bearer token"),
            "{body}"
        );
    }
    // The token guards all of /api before anything else: a path that does not decode, or
    // does not exist, is a 401 too, not a 400 or a 404 that maps the API.
    for path in [
        "/api/v1/operations/%ff%fe",
        "/api/v2/anything",
        "/api/v1/leavers",
        "/api/",
        "/api//v1/slo",
    ] {
        let (status, body) = get(port, path, None);
        assert_eq!(status, 401, "{path}: {body}");
    }
    assert_eq!(get(port, "/api/v2/anything", Some("s3cret-token")).0, 404);
    assert_eq!(get(port, "/api/", Some("s3cret-token")).0, 404);
    // The scheme is case-insensitive (RFC 9110): `bearer` works as `Bearer` does.
    let (status, body) = get_with(
        port,
        "/api/v1/operations/op-1",
        "Authorization: bearer s3cret-token\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(port, "/api/v1/operations/op-1", Some("s3cret-token"));
    assert_eq!(status, 200, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(op["outcome"], "failed");
    assert_eq!(op["cause"], "unauthorized");
    assert_eq!(op["join_method"], "correlation_id");
    assert_eq!(op["attempts"].as_array().unwrap().len(), 2);
    assert!(op["hint"].as_str().unwrap().contains("rotate"), "{op}");

    let (status, body) = get(port, "/api/v1/operations/no-such-id", Some("s3cret-token"));
    assert_eq!(status, 404);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("no operation with correlation ID \"no-such-id\""),
        "{body}"
    );

    // The failed high-risk leaver is open; its 2-second deadline passes with no input.
    wait_until(Duration::from_secs(10), || {
        get(port, "/api/v1/leavers/open", Some("s3cret-token"))
            .1
            .contains("\"overdue\":true")
    });
    let (_, body) = get(port, "/api/v1/leavers/open", Some("s3cret-token"));
    let open: serde_json::Value = serde_json::from_str(&body).unwrap();
    let leaver = &open["leavers"][0];
    assert_eq!(
        (
            leaver["user"].as_str(),
            leaver["high_risk"].as_bool(),
            leaver["deadline_seconds"].as_u64()
        ),
        (Some("ada@corp.example"), Some(true), Some(2))
    );
    assert!(leaver["age_seconds"].as_f64().unwrap() >= 2.0);
    let (_, body) = get(port, "/api/v1/alerts", Some("s3cret-token"));
    assert!(body.contains("LeaverDisableOverdue"), "{body}");

    // The daemon's own counters, the bad line among them (once its checkpoint is written).
    let counters = || -> serde_json::Value {
        let (_, body) = get(port, "/api/v1/status", Some("s3cret-token"));
        serde_json::from_str(&body).unwrap_or_default()
    };
    wait_until(Duration::from_secs(10), || {
        counters()["parse_errors"]["idp"] == 1
    });
    assert_eq!(counters()["parse_errors"]["idp"], 1);
    let (status, body) = get(port, "/api/v1/status", Some("s3cret-token"));
    assert_eq!(status, 200, "{body}");
    let counters: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(counters["ready"], true, "{body}");
    assert_eq!(counters["tail"]["files_lost"], 0, "{body}");
    assert!(counters["checkpoints"].as_u64().unwrap() >= 1, "{body}");
    assert!(counters.get("open_leavers").is_none(), "{body}");
    assert_eq!(get(port, "/api/v1/status", None).0, 401);

    let (status, body) = get(port, "/api/v1/slo", Some("s3cret-token"));
    assert_eq!(status, 200);
    let slo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hour = slo["stages"]["leaver"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["window"] == "1h")
        .unwrap();
    assert_eq!(
        (hour["operations"].as_u64(), hour["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(hour["success_ratio"], 0.0);
    let joiner_hour = slo["stages"]["joiner"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["window"] == "1h")
        .unwrap();
    assert_eq!(
        joiner_hour["success_ratio"],
        serde_json::Value::Null,
        "0/0 is no data, not NaN or 100%"
    );

    // /metrics: the contract's names, zero-initialised label sets, no user labels.
    let (status, metrics) = get(port, "/metrics", None);
    assert_eq!(status, 200);
    for name in [
        "scimwatch_operations_total{stage=\"leaver\",app=\"vault\",outcome=\"failed\",cause=\"unauthorized\"} 1",
        "scimwatch_leavers_overdue{risk=\"high\"} 1",
        "scimwatch_stage_success_ratio{stage=\"leaver\",window=\"1h\"} 0.0",
        "scimwatch_lines_total{source=\"gateway\"} 2",
        "scimwatch_parse_errors_total{source=\"idp\",reason=\"invalid_json\"} 1",
        "scimwatch_parse_errors_total{source=\"idp\",reason=\"missing_field\"} 0",
        "scimwatch_lines_total{source=\"idp\"} 2",
        "scimwatch_alerts_firing{alert=\"LeaverDisableOverdue\"} 1",
        "scimwatch_join_pending",
        "scimwatch_log_files{state=\"open\"} 2",
        "scimwatch_log_files{state=\"waiting\"} 0",
        "scimwatch_source_last_event_timestamp_seconds{source=\"idp\"}",
        "scimwatch_source_stale_after_seconds{source=\"idp\"} 900",
        "scimwatch_leaver_disable_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    assert!(!metrics.contains("ada@corp.example") && !metrics.contains("op-1"));
    assert!(
        !metrics.contains("stage=\"joiner\",window=\"1h\""),
        "no ratio series without operations"
    );
    // promtool (installed by `make deps`) lints the exposition.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by `make deps` (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// Clients that open connections and never finish a request (slowloris): past the cap they
/// wait in the kernel's backlog instead of taking the daemon's file descriptors (with 20,000
/// of them a QA run stopped the pipeline: "Too many open files"), each is closed once the
/// header timeout passes, the daemon goes on tailing, and a SIGTERM ends it at once rather
/// than when the clients leave (it waited for them for good).
#[test]
fn stalled_clients_neither_exhaust_the_daemon_nor_hold_up_its_stop() {
    let port = free_port();
    let setup = Setup::new(&CONFIG.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    ));
    let daemon = setup.start();
    wait_until(Duration::from_secs(10), || {
        get(port, "/readyz", None).0 == 200
    });
    let stall = |count: usize| -> Vec<std::net::TcpStream> {
        (0..count)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
                stream
            })
            .collect()
    };
    let stalled = stall(scimwatch::http::MAX_CONNECTIONS + 100);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        fds() < scimwatch::http::MAX_CONNECTIONS + 100,
        "{} descriptors: the cap did not hold",
        fds()
    );
    // The pipeline goes on meanwhile.
    let (idp, gw) = common::daemon::operation_lines("during-the-flood");
    setup.append("logs/idp.jsonl", &idp);
    setup.append("logs/gateway.log", &gw);
    // The header timeout closes the stalled connections; then the daemon answers again.
    let timeout = scimwatch::http::HEADER_READ_TIMEOUT;
    let mut first = stalled.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(timeout + Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest);
    wait_until(timeout * 3, || get(port, "/healthz", None).0 == 200);
    wait_until(Duration::from_secs(20), || {
        get(port, "/metrics", None)
            .1
            .contains("scimwatch_lines_total{source=\"gateway\"} 1")
    });
    assert_eq!(get(port, "/healthz", None).0, 200);
    // Its row reaches the store, and the counter of rows written says so (it stayed at 0).
    wait_until(Duration::from_secs(20), || {
        get(port, "/metrics", None)
            .1
            .contains("scimwatch_parquet_rows_total{table=\"operations\"} 1")
    });
    let metrics = get(port, "/metrics", None).1;
    for line in [
        "scimwatch_lines_total{source=\"gateway\"} 1",
        "scimwatch_parquet_rows_total{table=\"operations\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // SIGHUP, whose default ends a process, is logged and ignored: there is no reload.
    let mut daemon = daemon;
    std::process::Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    wait_until(Duration::from_secs(10), || {
        setup.daemon_log().contains("SIGHUP ignored")
    });
    assert!(setup.daemon_log().contains("SIGHUP ignored"));
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "SIGHUP ended it"
    );
    assert_eq!(get(port, "/healthz", None).0, 200);
    // New stalled clients, then SIGTERM: the daemon stops within a few seconds, cleanly.
    let _held = stall(20);
    let started = std::time::Instant::now();
    assert_eq!(daemon.stop(), Some(0));
    assert!(
        started.elapsed() < scimwatch::http::DRAIN + Duration::from_secs(5),
        "stopping took {:?}",
        started.elapsed()
    );
    let log = setup.daemon_log();
    assert!(
        !log.contains("Too many open files") && !log.contains("panicked"),
        "{log}"
    );
}

#[test]
fn the_server_listens_on_loopback_by_default_and_a_taken_port_is_a_clear_error() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let setup = Setup::new(&CONFIG.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    ));
    let output = setup.run_refused();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains(&format!("server.listen: cannot listen on 127.0.0.1:{port}")));
    let default = scimwatch::config::ServerConfig::default();
    assert!(default.listen.starts_with("127.0.0.1:"));
}
