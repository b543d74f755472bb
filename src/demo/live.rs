//! `scimwatch demo`: live traffic written into a temporary directory while the real daemon
//! tails it. Lines are appended when the wall clock reaches their event time, and the gateway
//! log is rotated by rename now and then, as logrotate would.

use super::traffic::{generate, TrafficSpec};
use crate::time::{parse_time, TimeFormat, Ts};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The config the demo runs the daemon with: an hour of incidents squeezed into a minute.
pub const DEMO_CONFIG: &str = r#"# Written by `scimwatch demo`.
[server]
listen = "127.0.0.1:9898"

[storage]
data_dir = "data"

[pipeline]
poll_interval_ms = 200
checkpoint_interval_secs = 2

[[source]]
name = "orchestrator"
role = "idp"
format = "json"
paths = ["logs/idp.jsonl*"]
[source.fields]
time = "/ts"
correlation_id = "/cid"
action = "/action"
app = "/app"
user_id = "/user_id"
user_login = "/user"
status = "/result"
error = "/error"

[[source]]
name = "nginx"
role = "gateway"
format = "nginx_json"
paths = ["logs/gateway.log*"]

[slo]
min_operations = 20
evaluation_window_secs = 60
join_window_secs = 5
allowed_lateness_secs = 1
standard_disable_within_secs = 3600

# Demo speed: high-risk leavers must be disabled within 20 seconds.
[[slo.high_risk]]
apps = ["aws-prod", "github"]
users = ["*admin*@corp.example"]
disable_within_secs = 20
"#;

/// One line to append at its time.
struct Timed {
    time: Ts,
    gateway: bool,
    line: String,
}

fn time_of(line: &str) -> Option<Ts> {
    for key in ["\"ts\":\"", "\"time\":\""] {
        if let Some(at) = line.find(key) {
            let rest = &line[at + key.len()..];
            let end = rest.find('"')?;
            return parse_time(&rest[..end], TimeFormat::Rfc3339).ok();
        }
    }
    None
}

/// The demo's traffic from `start`: 12 operations a second for `duration`, an hour of the
/// incident schedule every 10 s.
pub fn traffic_spec(start: Ts, duration: Duration) -> TrafficSpec {
    TrafficSpec {
        seed: start.0 as u64,
        start,
        operations: (duration.as_secs_f64() * 12.0) as u64,
        mean_gap_secs: 1.0 / 12.0,
        users: 500,
        trouble: true,
        trouble_unit_secs: 10,
        // 0.05–0.53 s between retries, inside the 5 s join window (an hour is 10 s here).
        retry_gap_scale: 1.0 / 40.0,
        incident_share: 0.25,
        ..TrafficSpec::default()
    }
}

/// Writes the demo's config and starts appending traffic for `duration` in a thread. Returns
/// the config path. The thread stops early when `stop` is set.
pub fn start(
    dir: &Path,
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(PathBuf, std::thread::JoinHandle<()>)> {
    fs::create_dir_all(dir.join("logs"))?;
    let config = dir.join("scimwatch.toml");
    fs::write(&config, DEMO_CONFIG)?;
    let start = crate::daemon::wall_clock();
    let spec = traffic_spec(start, duration);
    let (mut idp, mut gateway) = (Vec::new(), Vec::new());
    generate(&spec, &mut idp, &mut gateway)?;
    let mut lines: Vec<Timed> = Vec::new();
    for (bytes, is_gateway) in [(&idp, false), (&gateway, true)] {
        for line in String::from_utf8_lossy(bytes).lines() {
            if let Some(time) = time_of(line) {
                lines.push(Timed {
                    time,
                    gateway: is_gateway,
                    line: line.to_string(),
                });
            }
        }
    }
    // A few bad lines, as real logs have: they are counted and set aside, never fatal.
    lines.push(Timed {
        time: Ts(start.0 + 7_000_000),
        gateway: false,
        line: "{\"ts\":\"2026-13-45T99:00:00Z\",\"cid\":\"broken\"".into(),
    });
    lines.push(Timed {
        time: Ts(start.0 + 9_000_000),
        gateway: true,
        line: "GET /favicon.ico HTTP/1.1 200".into(),
    });
    lines.sort_by_key(|l| l.time);
    let logs = dir.join("logs");
    let handle = std::thread::spawn(move || {
        let mut gateway_lines = 0u64;
        for timed in lines {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            loop {
                let now = crate::daemon::wall_clock();
                if now >= timed.time || stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(
                    (timed.time.0 - now.0).clamp(1_000, 100_000) as u64,
                ));
            }
            // Stopped while waiting: this line's time has not come, and the daemon is stopping
            // (written anyway, `replay` read one line the daemon never saw).
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let name = if timed.gateway {
                "gateway.log"
            } else {
                "idp.jsonl"
            };
            if timed.gateway {
                gateway_lines += 1;
                // logrotate by rename every 300 lines: the daemon follows the old file to its end.
                if gateway_lines.is_multiple_of(300) {
                    let _ = fs::rename(
                        logs.join("gateway.log"),
                        logs.join(format!("gateway.log.{}", gateway_lines / 300)),
                    );
                }
            }
            if let Ok(mut file) = OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join(name))
            {
                let _ = writeln!(file, "{}", timed.line);
            }
        }
    });
    Ok((config, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// What a newcomer sees must be what happened: the demo's retries come within its 5 s join
    /// window (they came 2–21 s apart, so most 429 retries were unattributed writes and their
    /// operations failed as `rate_limited`: 23 apps had an UnattributedWrites ticket), and its
    /// expired token hits enough jira requests to pass the auth alert's threshold of 3.
    #[test]
    fn the_demo_s_retries_join_and_its_incidents_are_big_enough_to_see() {
        for start in [
            1_782_892_800_000_000,
            1_800_000_000_123_456,
            1_790_000_000_654_321,
        ] {
            let spec = traffic_spec(Ts(start), Duration::from_secs(75));
            let (mut idp, mut gateway) = (Vec::new(), Vec::new());
            generate(&spec, &mut idp, &mut gateway).unwrap();
            let field = |line: &str, key: &str| -> Option<String> {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                Some(
                    v.get(key)?
                        .as_str()
                        .map_or(v[key].to_string(), str::to_string),
                )
            };
            let idp_time: HashMap<String, Ts> = String::from_utf8(idp)
                .unwrap()
                .lines()
                .map(|l| (field(l, "cid").unwrap(), time_of(l).unwrap()))
                .collect();
            let (mut joined, mut jira_401, mut gave_up) = (0, 0, 0);
            for line in String::from_utf8(gateway).unwrap().lines() {
                let cid = field(line, "xrid").unwrap();
                let Some(at) = idp_time.get(&cid) else {
                    continue; // a hand-made write, "-"
                };
                let lag = time_of(line).unwrap().secs_since(*at);
                assert!((0.0..5.0).contains(&lag), "{lag} s: {line}");
                joined += 1;
                let status = field(line, "status").unwrap();
                let app = field(line, "app").unwrap();
                jira_401 += usize::from(app == "jira" && status == "401");
                gave_up += usize::from(app == "github" && status == "429");
            }
            assert!(joined > 800, "{joined}");
            assert!(jira_401 >= 6, "{jira_401} 401s from jira");
            assert!(gave_up >= 1, "{gave_up} 429s from github");
        }
    }
}
