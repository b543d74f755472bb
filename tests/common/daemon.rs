//! Drives the real `scimwatch run` binary on real files: start, SIGTERM, kill -9, and read
//! what it committed to Parquet.
#![allow(dead_code)]

use scimwatch::audit::export::{read_leavers, read_operations};
use scimwatch::audit::schema::{LeaverRow, OperationRow};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A test directory with `logs/`, a config, and the daemon's data.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

pub const CONFIG: &str = r#"
[server]
# Any free loopback port: tests run daemons side by side.
listen = "127.0.0.1:0"

[storage]
data_dir = "data"

[pipeline]
poll_interval_ms = 50
checkpoint_interval_secs = 1
rotate_wait_secs = 2

[[source]]
name = "idp"
role = "idp"
format = "json"
paths = ["logs/idp.jsonl*"]
max_line_bytes = 65536
[source.fields]
time = "/ts"
correlation_id = "/cid"
action = "/action"
app = "/app"
user_login = "/user"
status = "/result"

[[source]]
name = "gateway"
role = "gateway"
format = "json"
paths = ["logs/gateway.log*"]
max_line_bytes = 65536
[source.fields]
time = "/ts"
correlation_id = "/cid"
method = "/method"
path = "/path"
status = "/status"
app = "/app"

[slo]
join_window_secs = 1
allowed_lateness_secs = 1

[[slo.high_risk]]
apps = ["vault"]
disable_within_secs = 2
"#;

impl Setup {
    pub fn new(config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        std::fs::write(dir.path().join("scimwatch.toml"), config).unwrap();
        Setup { dir }
    }
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }
    pub fn config(&self) -> PathBuf {
        self.path("scimwatch.toml")
    }
    /// `scimwatch run` where it should refuse to start: its output, once it exits. One that
    /// starts after all is killed after 30 s (status `None`), so the test fails, not hangs.
    pub fn run_refused(&self) -> std::process::Output {
        let child = Command::new(env!("CARGO_BIN_EXE_scimwatch"))
            .args(["run", "--config", self.config().to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (done, waited) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if waited.recv_timeout(Duration::from_secs(30)).is_err() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        });
        let output = child.wait_with_output().unwrap();
        let _ = done.send(());
        watchdog.join().unwrap();
        output
    }
    /// Appends text to a log file (creating it).
    pub fn append(&self, relative: &str, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(relative))
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }
    pub fn start(&self) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_scimwatch"))
            .args(["run", "--config", self.config().to_str().unwrap()])
            .env("SCIMWATCH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon { child }
    }
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }
    /// Every operation row committed so far.
    pub fn operations(&self) -> Vec<OperationRow> {
        rows(&self.path("data/operations"), read_operations)
    }
    pub fn leavers(&self) -> Vec<LeaverRow> {
        rows(&self.path("data/leavers"), read_leavers)
    }
    /// Waits (up to `timeout`) until `ready` holds for the committed operations.
    pub fn wait_for(
        &self,
        timeout: Duration,
        ready: impl Fn(&[OperationRow]) -> bool,
    ) -> Vec<OperationRow> {
        let start = Instant::now();
        loop {
            let rows = self.operations();
            if ready(&rows) || start.elapsed() > timeout {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn rows<T>(
    dir: &Path,
    read: fn(&Path) -> Result<Vec<T>, scimwatch::audit::writer::AuditError>,
) -> Vec<T> {
    let mut out = Vec::new();
    let Ok(partitions) = std::fs::read_dir(dir) else {
        return out;
    };
    for partition in partitions.flatten() {
        let Ok(files) = std::fs::read_dir(partition.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet") && !name.starts_with('.') {
                out.extend(read(&file.path()).unwrap());
            }
        }
    }
    out
}

pub struct Daemon {
    pub child: Child,
}

impl Drop for Daemon {
    /// A failed assertion must not leave a daemon running after the test.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    /// SIGTERM, then wait; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap().code()
    }
    /// SIGKILL: no chance to flush or checkpoint.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Now, as RFC 3339.
pub fn now() -> String {
    scimwatch::daemon::wall_clock().to_string()
}

/// An IdP line and a gateway line of one successful operation, stamped now.
pub fn operation_lines(cid: &str) -> (String, String) {
    operation_lines_at(cid, 0)
}

/// [`operation_lines`], stamped `secs_ago` seconds ago.
pub fn operation_lines_at(cid: &str, secs_ago: i64) -> (String, String) {
    let now = scimwatch::daemon::wall_clock();
    let t = scimwatch::time::Ts(now.0 - secs_ago * scimwatch::time::MICROS_PER_SEC);
    (
        format!("{{\"ts\":\"{t}\",\"cid\":\"{cid}\",\"action\":\"update\",\"app\":\"wiki\",\"user\":\"{cid}@corp.example\",\"result\":\"success\"}}\n"),
        format!("{{\"ts\":\"{t}\",\"cid\":\"{cid}\",\"method\":\"PATCH\",\"path\":\"/scim/v2/Users/{cid}\",\"status\":200,\"app\":\"wiki\"}}\n"),
    )
}

/// How many committed rows each correlation ID has, and their outcomes.
pub fn by_cid(rows: &[OperationRow]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut map: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for row in rows {
        map.entry(row.correlation_id.clone().unwrap_or_default())
            .or_default()
            .push(row.outcome.clone());
    }
    map
}

/// `replay --parquet DIR` of a config: a reference store for what the daemon commits.
pub fn replay_into(config: &Path, dir: &Path) {
    let output = super::run(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--format",
        "json",
        "--parquet",
        dir.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every operation row of a table directory (`…/operations`).
pub fn read_dir_rows(dir: &Path) -> Vec<OperationRow> {
    rows(dir, read_operations)
}

/// Every leaver row of a table directory (`…/leavers`).
pub fn read_dir_leavers(dir: &Path) -> Vec<LeaverRow> {
    rows(dir, read_leavers)
}
