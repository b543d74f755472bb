//! End to end with a real Prometheus (Debian's 2.42, installed by `make deps`): it scrapes the
//! daemon on loopback every second and evaluates the shipped rules; then every expression of
//! every rule and every dashboard panel must evaluate without error and return data.

mod common;

use common::daemon::{now, Setup, CONFIG};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_string()))
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// (ok, number of series) of an instant query.
fn query(port: u16, expr: &str) -> Result<usize, String> {
    let (status, body) =
        http_get(port, &format!("/api/v1/query?query={}", encode(expr))).ok_or("no answer")?;
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    if value["status"] != "success" {
        return Err(format!("{status}: {body}"));
    }
    Ok(value["data"]["result"].as_array().map_or(0, Vec::len))
}

/// Every `expr:` of a rules file (single-line or `|` blocks).
fn rule_exprs(text: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" {
                let indent = lines[i].len() - trimmed.len();
                let mut block = Vec::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() > indent)
                {
                    block.push(lines[i].trim());
                    i += 1;
                }
                exprs.push(block.join(" "));
                continue;
            }
            exprs.push(rest.to_string());
        }
        i += 1;
    }
    exprs
}

fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m");
            for stage in ["joiner", "mover", "leaver"] {
                exprs.push((
                    format!("{} [{stage}]", panel["title"].as_str().unwrap()),
                    expr.replace("$stage", stage),
                ));
                if !expr.contains("$stage") {
                    break;
                }
            }
        }
    }
    exprs
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn line(setup: &Setup, file: &str, text: String) {
    setup.append(file, &(text + "\n"));
}

#[test]
fn prometheus_scrapes_the_daemon_and_every_rule_and_dashboard_query_returns_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let daemon_port = free_port();
    let config = CONFIG
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{daemon_port}\""))
        .replace("app = \"/app\"\n\n[slo]", "app = \"/app\"\nprincipal = \"/principal\"\n\n[[source]]\nname = \"hr\"\nrole = \"trigger\"\nformat = \"json\"\npaths = [\"logs/hr.jsonl\"]\nstale_after_secs = 900\n[source.fields]\ntime = \"/at\"\nuser_login = \"/email\"\nevent = \"/event\"\n[source.stages]\nleaver = [\"terminated\"]\n\n[slo]")
        + "\n[apps]\naliases = { \"jira\" = [], \"wiki\" = [], \"vault\" = [] }\n";
    let setup = Setup::new(&config);
    let daemon = setup.start();
    let start = Instant::now();
    while http_get(daemon_port, "/readyz").map(|r| r.0) != Some(200)
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }

    // Prometheus on loopback, scraping every second, with the shipped rules evaluated every
    // second (the rule files' 1m group interval is the only change).
    let prometheus_port = free_port();
    let rules = std::fs::read_to_string(root.join("rules/scimwatch.rules.yml")).unwrap();
    std::fs::write(
        setup.path("rules.yml"),
        rules.replace("interval: 1m", "interval: 1s"),
    )
    .unwrap();
    // A second target where nothing listens: a scimwatch that is down, for ScimwatchDown.
    let down_port = free_port();
    std::fs::write(
        setup.path("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n- job_name: scimwatch\n  static_configs:\n  - targets: ['127.0.0.1:{daemon_port}', '127.0.0.1:{down_port}']\n"),
    )
    .unwrap();
    let prometheus = Prometheus(
        Command::new("prometheus")
            .args([
                &format!("--config.file={}", setup.path("prometheus.yml").display()),
                &format!("--storage.tsdb.path={}", setup.path("tsdb").display()),
                &format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
                "--log.level=warn",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed by `make deps` (Debian package prometheus)"),
    );
    let start = Instant::now();
    while query(prometheus_port, "up{job=\"scimwatch\"} == 1").ok() != Some(1)
        && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        query(prometheus_port, "up{job=\"scimwatch\"} == 1"),
        Ok(1),
        "Prometheus scrapes the daemon"
    );
    std::thread::sleep(Duration::from_secs(2)); // a few scrapes of the zero-initialised series

    // Traffic that makes every alert condition true: a joiner outage with expired tokens,
    // a degraded mover stage, a disabled and an overdue high-risk leaver, a disabled user's
    // request, a hand-made write, and an HR feed that went quiet 20 minutes ago (watched: a
    // trigger source is never stale unless it sets `stale_after_secs`).
    let t = now();
    let old = scimwatch::time::Ts(scimwatch::daemon::wall_clock().0 - 1_200_000_000);
    line(
        &setup,
        "logs/hr.jsonl",
        format!(
            "{{\"at\":\"{old}\",\"email\":\"someone@corp.example\",\"event\":\"transferred\"}}"
        ),
    );
    for i in 0..30 {
        let status = if i % 2 == 0 { 201 } else { 401 };
        line(&setup, "logs/idp.jsonl", format!("{{\"ts\":\"{t}\",\"cid\":\"j-{i}\",\"action\":\"create\",\"app\":\"jira\",\"user\":\"j{i}@corp.example\",\"result\":\"success\"}}"));
        line(&setup, "logs/gateway.log", format!("{{\"ts\":\"{t}\",\"cid\":\"j-{i}\",\"method\":\"POST\",\"path\":\"/scim/v2/Users\",\"status\":{status},\"app\":\"jira\"}}"));
    }
    for i in 0..100 {
        let status = if i < 3 { 500 } else { 200 };
        line(&setup, "logs/idp.jsonl", format!("{{\"ts\":\"{t}\",\"cid\":\"m-{i}\",\"action\":\"update\",\"app\":\"wiki\",\"user\":\"m{i}@corp.example\",\"result\":\"success\"}}"));
        line(&setup, "logs/gateway.log", format!("{{\"ts\":\"{t}\",\"cid\":\"m-{i}\",\"method\":\"PATCH\",\"path\":\"/scim/v2/Users/m{i}\",\"status\":{status},\"app\":\"wiki\"}}"));
    }
    for (cid, user, status) in [
        ("l-ok", "ada@corp.example", 200),
        ("l-stuck", "bob@corp.example", 503),
    ] {
        line(&setup, "logs/idp.jsonl", format!("{{\"ts\":\"{t}\",\"cid\":\"{cid}\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"{user}\",\"result\":\"success\"}}"));
        line(&setup, "logs/gateway.log", format!("{{\"ts\":\"{t}\",\"cid\":\"{cid}\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/{cid}\",\"status\":{status},\"app\":\"vault\"}}"));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let later = now();
    line(&setup, "logs/gateway.log", format!("{{\"ts\":\"{later}\",\"cid\":\"api-1\",\"method\":\"GET\",\"path\":\"/v1/secrets\",\"status\":200,\"app\":\"vault\",\"principal\":\"ADA@corp.example\"}}"));
    line(&setup, "logs/gateway.log", format!("{{\"ts\":\"{later}\",\"method\":\"PATCH\",\"path\":\"/scim/v2/Users/x-9\",\"status\":200,\"app\":\"wiki\"}}"));

    let mut exprs: Vec<(String, String)> = rule_exprs(&rules)
        .into_iter()
        .map(|e| ("rule".to_string(), e))
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("dashboards/scimwatch.json")).unwrap(),
    )
    .unwrap();
    exprs.extend(dashboard_exprs(&dashboard));
    assert!(exprs.len() > 45, "{} expressions", exprs.len());
    // Wait until everything has been judged, scraped and evaluated (or time out and report).
    let start = Instant::now();
    let failures = loop {
        let failures: Vec<String> = exprs
            .iter()
            .filter_map(|(from, expr)| match query(prometheus_port, expr) {
                Ok(0) => Some(format!("{from}: no data: {expr}")),
                Ok(_) => None,
                Err(error) => Some(format!("{from}: error {error}: {expr}")),
            })
            .collect();
        if failures.is_empty() || start.elapsed() > Duration::from_secs(60) {
            break failures;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    drop(prometheus);
    assert_eq!(daemon.stop(), Some(0));
    assert!(
        failures.is_empty(),
        "{} of {} expressions failed:\n{}\n{}",
        failures.len(),
        exprs.len(),
        failures.join("\n"),
        setup.daemon_log()
    );
}
