//! Paging end to end: the real daemon, driven into alerts by real log lines, delivering to a
//! real SMTP server (aiosmtpd, tests/python/smtp_sink.py), to a local HTTP receiver that checks
//! each webhook format, and to a real Alertmanager (Debian's `prometheus-alertmanager`).
//! `make test` installs both.

mod common;

use common::daemon::{now, Setup, CONFIG};
use common::{free_port, get, wait_until};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn python() -> PathBuf {
    match std::env::var_os("SCIMWATCH_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

/// aiosmtpd on `port`, saving each mail as `<dir>/<n>.eml`. Killed on drop.
struct SmtpSink {
    child: Child,
}

impl SmtpSink {
    fn start(port: u16, dir: &Path) -> SmtpSink {
        SmtpSink::start_with(port, dir, &[])
    }

    /// The same, speaking TLS (`starttls` or `implicit`) with `pki`'s server certificate.
    fn start_tls(port: u16, dir: &Path, mode: &str, pki: &Pki) -> SmtpSink {
        SmtpSink::start_with(
            port,
            dir,
            &[mode.as_ref(), pki.cert.as_ref(), pki.key.as_ref()],
        )
    }

    fn start_with(port: u16, dir: &Path, tls: &[&std::ffi::OsStr]) -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/smtp_sink.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .arg(dir)
            .args(tls)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} (run `make test`, which installs aiosmtpd): {e}",
                    python().display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
        SmtpSink { child }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every mail received so far, in arrival order.
fn mails(dir: &Path) -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn subject(mail: &str) -> &str {
    mail.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
}

/// The daemon's test config plus alerting that acts within seconds.
fn config(receivers: &str) -> String {
    let mut config = CONFIG.replace("[slo]\n", "[slo]\nmin_operations = 10\n");
    config.push_str(
        r#"
[alerting]
hold_secs = 0
keep_firing_secs = 0
group_wait_secs = 1
group_interval_secs = 1
repeat_interval_secs = 3600
retry_max_backoff_secs = 1
send_timeout_secs = 5
dashboard_url = "http://grafana.test/d/scimwatch-overview"
"#,
    );
    config.push_str(receivers);
    config
}

fn email_receiver(port: u16) -> String {
    format!(
        r#"
[[receiver]]
name = "oncall"
[receiver.email]
smtp_url = "smtp://127.0.0.1:{port}"
tls = "none"
from = "scimwatch@corp.example"
to = ["iam-oncall@corp.example"]

[[route]]
match = {{ severity = "page" }}
receiver = "oncall"
"#
    )
}

/// Twelve joiners refused with 409: the joiner stage is an incident (0% of ≥ 10).
fn joiner_incident(setup: &Setup) {
    let t = now();
    let (mut idp, mut gw) = (String::new(), String::new());
    for i in 0..12 {
        idp.push_str(&format!("{{\"ts\":\"{t}\",\"cid\":\"join-{i}\",\"action\":\"create\",\"app\":\"wiki\",\"user\":\"new{i}@corp.example\",\"result\":\"success\"}}\n"));
        gw.push_str(&format!("{{\"ts\":\"{t}\",\"cid\":\"join-{i}\",\"method\":\"POST\",\"path\":\"/scim/v2/Users\",\"status\":409,\"app\":\"wiki\"}}\n"));
    }
    setup.append("logs/idp.jsonl", &idp);
    setup.append("logs/gateway.log", &gw);
}

/// 400 joiners that succeed: 400 of 412 is 97%, no longer an incident.
fn joiner_recovery(setup: &Setup) {
    let t = now();
    let (mut idp, mut gw) = (String::new(), String::new());
    for i in 0..400 {
        idp.push_str(&format!("{{\"ts\":\"{t}\",\"cid\":\"ok-{i}\",\"action\":\"create\",\"app\":\"wiki\",\"user\":\"ok{i}@corp.example\",\"result\":\"success\"}}\n"));
        gw.push_str(&format!("{{\"ts\":\"{t}\",\"cid\":\"ok-{i}\",\"method\":\"POST\",\"path\":\"/scim/v2/Users\",\"status\":201,\"app\":\"wiki\"}}\n"));
    }
    setup.append("logs/idp.jsonl", &idp);
    setup.append("logs/gateway.log", &gw);
}

/// A high-risk leaver (vault, 2-second deadline) whose disable the target refuses with 503.
fn stuck_leaver(setup: &Setup) {
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"stuck\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"root-admin@corp.example\",\"result\":\"failure\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"stuck\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-1\",\"status\":503,\"app\":\"vault\"}}\n"));
}

/// The IdP retries and the target disables the leaver: the episode closes.
fn leaver_disabled(setup: &Setup) {
    let t = now();
    setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"retry\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"root-admin@corp.example\",\"result\":\"success\"}}\n"));
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"retry\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/u-1\",\"status\":204,\"app\":\"vault\"}}\n"));
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn smtp_gets_one_page_per_alert_with_its_evidence_then_one_resolve_each() {
    let port = free_port();
    let setup = Setup::new(&config(&email_receiver(port)));
    let inbox = setup.path("inbox");
    let _smtp = SmtpSink::start(port, &inbox);
    let daemon = setup.start();
    joiner_incident(&setup);
    stuck_leaver(&setup);
    wait_until(WAIT, || mails(&inbox).len() >= 2);
    // Quiet time: no second page for either while they keep firing.
    std::thread::sleep(Duration::from_secs(3));
    let pages = mails(&inbox);
    assert_eq!(
        pages.len(),
        2,
        "one page each: {pages:#?}\n{}",
        setup.daemon_log()
    );
    let incident = pages
        .iter()
        .find(|m| subject(m).contains("StageSuccessIncident"))
        .expect("an incident page");
    let overdue = pages
        .iter()
        .find(|m| subject(m).contains("LeaverDisableOverdue"))
        .expect("an overdue page");
    assert!(
        subject(incident).starts_with("[FIRING:1] [page]"),
        "{incident}"
    );
    for needle in [
        "X-Envelope-To: iam-oncall@corp.example",
        "SCIM joiner success 0.0% over the last 1h is below the incident threshold 95.0%",
        "12 of 12 joiner operations failed or are unconfirmed in the last 1h",
        "conflict ×12: duplicate userName/externalId",
        "Sample correlation IDs: join-",
        "Labels: stage=joiner",
        "Runbook: https://github.com/scimwatch/scimwatch/blob/main/README.md#stagesuccessincident",
        "Dashboard: http://grafana.test/d/scimwatch-overview",
    ] {
        assert!(
            incident.contains(needle),
            "{needle:?} missing from:\n{incident}"
        );
    }
    for needle in [
        "High-risk leaver root-admin@corp.example in vault is still not disabled",
        "User: root-admin@corp.example",
        "deadline 2s",
        "Correlation IDs: stuck",
        "failed with server_error ×1: target app failed (5xx)",
        "Runbook: https://github.com/scimwatch/scimwatch/blob/main/README.md#leaverdisableoverdue",
    ] {
        assert!(
            overdue.contains(needle),
            "{needle:?} missing from:\n{overdue}"
        );
    }

    joiner_recovery(&setup);
    leaver_disabled(&setup);
    wait_until(WAIT, || mails(&inbox).len() >= 4);
    std::thread::sleep(Duration::from_secs(2));
    let all = mails(&inbox);
    assert_eq!(
        all.len(),
        4,
        "one resolve each: {all:#?}\n{}",
        setup.daemon_log()
    );
    let resolves: Vec<&str> = all[2..].iter().map(|m| subject(m)).collect();
    assert!(
        resolves
            .iter()
            .any(|s| s.starts_with("[RESOLVED:1] [page] StageSuccessIncident")),
        "{resolves:?}"
    );
    assert!(
        resolves
            .iter()
            .any(|s| s.starts_with("[RESOLVED:1] [page] LeaverDisableOverdue")),
        "{resolves:?}"
    );
    assert!(all[2..].iter().all(|m| m.contains("Resolved at: ")));
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn routes_send_each_alert_to_its_team_and_leavers_overdue_together_come_as_one_page() {
    let port = free_port();
    let receivers = format!(
        r#"
[[receiver]]
name = "oncall"
[receiver.email]
smtp_url = "smtp://127.0.0.1:{port}"
tls = "none"
from = "scimwatch@corp.example"
to = ["iam-oncall@corp.example"]

[[receiver]]
name = "tickets"
[receiver.email]
smtp_url = "smtp://127.0.0.1:{port}"
tls = "none"
from = "scimwatch@corp.example"
to = ["iam-tickets@corp.example"]

[[route]]
match = {{ severity = "page" }}
receiver = "oncall"

[[route]]
receiver = "tickets"
"#
    );
    let mut config = config(&receivers);
    config = config.replace("group_wait_secs = 1", "group_wait_secs = 2");
    let setup = Setup::new(&config);
    let inbox = setup.path("inbox");
    let _smtp = SmtpSink::start(port, &inbox);
    let daemon = setup.start();
    let t = now();
    for user in ["ops-admin", "db-admin", "root-admin"] {
        setup.append("logs/idp.jsonl", &format!("{{\"ts\":\"{t}\",\"cid\":\"{user}\",\"action\":\"deactivate\",\"app\":\"vault\",\"user\":\"{user}@corp.example\",\"result\":\"failure\"}}\n"));
        setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"{user}\",\"method\":\"DELETE\",\"path\":\"/scim/v2/Users/{user}\",\"status\":503,\"app\":\"vault\"}}\n"));
    }
    // A write nobody in the IdP asked for: a ticket, not a page.
    setup.append("logs/gateway.log", &format!("{{\"ts\":\"{t}\",\"cid\":\"by-hand\",\"method\":\"PATCH\",\"path\":\"/scim/v2/Users/u-9\",\"status\":200,\"app\":\"wiki\"}}\n"));
    wait_until(WAIT, || mails(&inbox).len() >= 2);
    std::thread::sleep(Duration::from_secs(3));
    let all = mails(&inbox);
    assert_eq!(all.len(), 2, "{all:#?}\n{}", setup.daemon_log());
    let page = all
        .iter()
        .find(|m| m.contains("X-Envelope-To: iam-oncall@corp.example"))
        .expect("a page to on-call");
    assert!(
        subject(page).starts_with("[FIRING:3] [page] LeaverDisableOverdue: 3 alerts"),
        "{page}"
    );
    for user in ["ops-admin", "db-admin", "root-admin"] {
        assert!(
            page.contains(&format!("User: {user}@corp.example")),
            "{page}"
        );
    }
    let ticket = all
        .iter()
        .find(|m| m.contains("X-Envelope-To: iam-tickets@corp.example"))
        .expect("a ticket");
    assert!(
        subject(ticket).starts_with("[FIRING:1] [ticket] UnattributedWrites"),
        "{ticket}"
    );
    assert!(
        ticket.contains("PATCH /scim/v2/Users/u-9 -> 200 (by-hand)"),
        "{ticket}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_page_fired_while_the_mail_server_is_down_arrives_once_it_is_up() {
    let port = free_port();
    let setup = Setup::new(&config(&email_receiver(port)));
    let inbox = setup.path("inbox");
    let daemon = setup.start();
    stuck_leaver(&setup);
    wait_until(WAIT, || {
        setup
            .daemon_log()
            .matches("Notification failed; will retry.")
            .count()
            >= 2
    });
    assert!(
        setup
            .daemon_log()
            .contains("Notification failed; will retry."),
        "{}",
        setup.daemon_log()
    );
    assert!(mails(&inbox).is_empty());
    let _smtp = SmtpSink::start(port, &inbox);
    wait_until(WAIT, || !mails(&inbox).is_empty());
    std::thread::sleep(Duration::from_secs(3));
    let pages = mails(&inbox);
    assert_eq!(pages.len(), 1, "exactly once: {pages:#?}");
    assert!(subject(&pages[0]).contains("LeaverDisableOverdue"));
    assert!(!setup.path("data/dead-letter.jsonl").exists());
    assert_eq!(daemon.stop(), Some(0));
}

/// One recipient refused for good (550, a departed colleague's mailbox) does not keep the
/// page from the others: each recipient has an envelope of its own, and the refusal is
/// logged. (One message to both was refused whole and dead-lettered: nobody was paged.)
#[test]
fn a_refused_recipient_does_not_keep_the_page_from_the_others() {
    let port = free_port();
    let receiver = email_receiver(port).replace(
        r#"to = ["iam-oncall@corp.example"]"#,
        r#"to = ["gone@corp.example", "iam-oncall@corp.example"]"#,
    );
    let setup = Setup::new(&config(&receiver));
    let inbox = setup.path("inbox");
    let _smtp = SmtpSink::start(port, &inbox);
    let daemon = setup.start();
    stuck_leaver(&setup);
    wait_until(WAIT, || !mails(&inbox).is_empty());
    std::thread::sleep(Duration::from_secs(2));
    let pages = mails(&inbox);
    assert_eq!(
        pages.len(),
        1,
        "one copy, to the address that exists: {pages:#?}"
    );
    assert!(subject(&pages[0]).contains("LeaverDisableOverdue"));
    assert!(pages[0].contains("X-Envelope-To: iam-oncall@corp.example"));
    assert_eq!(daemon.stop(), Some(0));
    let log = setup.daemon_log();
    assert!(
        log.contains("A recipient refused the page") && log.contains("gone@corp.example"),
        "{log}"
    );
    assert!(!setup.path("data/dead-letter.jsonl").exists());
}

/// A retry goes to whoever still lacks a page and carries only what they lack: a batch that
/// grew during the backoff (a second leaver overdue) was a new batch, and the recipient who
/// had the first page got it again inside the second (QA helper-14, F11). The real
/// EmailChannel against aiosmtpd, which defers later@ twice.
#[test]
fn a_retry_sends_each_recipient_only_the_pages_it_lacks() {
    use scimwatch::alert::{Condition, Notification, NotificationKind};
    use scimwatch::notify::send::{EmailChannel, SendResult};
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let _smtp = SmtpSink::start(port, &inbox);
    let config: scimwatch::config::EmailConfig = toml::from_str(&format!(
        "smtp_url = \"smtp://127.0.0.1:{port}\"\ntls = \"none\"\nfrom = \"scimwatch@corp.example\"\nto = [\"oncall@corp.example\", \"later@corp.example\"]\n"
    ))
    .unwrap();
    let channel = EmailChannel::new("oncall", &config, Duration::from_secs(10)).unwrap();
    let overdue = |user: &str| {
        let condition = Condition {
            alert: "LeaverDisableOverdue".into(),
            severity: "page".into(),
            labels: [("app", "vault"), ("user", user)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            summary: format!("High-risk leaver {user} in vault is still not disabled"),
            details: vec![],
        };
        Notification {
            kind: NotificationKind::Firing,
            dedup_key: condition.dedup_key(),
            condition,
            firing_since: scimwatch::time::Ts::from_secs(1_782_892_800),
            at: scimwatch::time::Ts::from_secs(1_782_892_800),
        }
    };
    let links = scimwatch::notify::render::Links {
        runbook: "https://example.invalid/runbook".into(),
        dashboard: None,
        repeat_interval_secs: 3600,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = (overdue("ada@corp.example"), overdue("bob@corp.example"));
    let first = runtime.block_on(channel.send(std::slice::from_ref(&a), &links));
    assert!(matches!(first, SendResult::Retry(..)), "later@ deferred");
    // The group grew while it waited: a's page and b's.
    let grown = [a, b];
    let second = runtime.block_on(channel.send(&grown, &links));
    assert!(
        matches!(second, SendResult::Retry(..)),
        "later@ deferred again"
    );
    let third = runtime.block_on(channel.send(&grown, &links));
    assert!(matches!(third, SendResult::Sent), "later@ takes it");
    let received = |to: &str| -> Vec<String> {
        mails(&inbox)
            .iter()
            .filter(|m| m.contains(&format!("X-Envelope-To: {to}")))
            .map(|m| subject(m).to_string())
            .collect()
    };
    let oncall = received("oncall@corp.example");
    assert_eq!(oncall.len(), 2, "{oncall:#?}");
    assert!(
        oncall[0].contains("ada@corp.example") && !oncall[0].contains("bob@"),
        "{oncall:#?}"
    );
    assert!(
        oncall[1].contains("bob@corp.example") && !oncall[1].contains("ada@"),
        "a's page once, b's alone: {oncall:#?}"
    );
    let later = received("later@corp.example");
    assert_eq!(later.len(), 1, "{later:#?}");
}

/// A relay that answers the first message only after the send has timed out, then answers
/// the third with 451. Each send has its own connection, so the timed-out dialogue cannot
/// leave its late answer to be read as the next command's: the 451 is retried and the page
/// arrives. (With lettre's pool, the 451 was read as a success and the page was lost.)
#[test]
fn a_send_that_timed_out_leaves_no_reply_to_be_misread_by_the_next() {
    let port = free_port();
    let setup = Setup::new(&config(&email_receiver(port)));
    let events = setup.path("smtp-events.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/stall_smtp.py");
    // send_timeout_secs is 5 (`config`): the first answer comes after 8.
    let mut server = Command::new(python())
        .arg(script)
        .arg(port.to_string())
        .arg(&events)
        .arg("8")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let answered = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let daemon = setup.start();
    stuck_leaver(&setup);
    // The overdue page times out once, then goes through on a new connection.
    wait_until(WAIT, || {
        setup
            .daemon_log()
            .contains("Notification delivered. target_name=oncall/email key=LeaverDisableOverdue")
    });
    joiner_incident(&setup);
    // The incident page is answered 451, retried, and accepted.
    wait_until(WAIT, || {
        answered().iter().any(|e| {
            e["answer"] == 250
                && e["message"].as_u64() > Some(3)
                && e["subject"]
                    .as_str()
                    .unwrap_or("")
                    .contains("StageSuccessIncident")
        })
    });
    assert_eq!(daemon.stop(), Some(0));
    let _ = server.kill();
    let _ = server.wait();
    let log = setup.daemon_log();
    let events = answered();
    assert!(
        events.iter().any(|e| e["answer"] == 451),
        "the third message was refused: {events:?}"
    );
    assert!(
        events.iter().any(|e| e["answer"] == 250
            && e["message"].as_u64() > Some(3)
            && e["subject"]
                .as_str()
                .unwrap_or("")
                .contains("StageSuccessIncident")),
        "the incident page arrived after its 451: {events:?}\n{log}"
    );
    assert!(log.contains("timed out after 5s"), "{log}");
    assert!(
        log.contains("transient error (451)"),
        "the 451 was seen as a 451: {log}"
    );
    assert!(!setup.path("data/dead-letter.jsonl").exists());
}

/// A private CA and a server certificate it signed for `localhost` and 127.0.0.1, made with
/// the openssl command line: what a corporate relay or receiver presents.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl (`make test` installs it): {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=scimwatch test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// An email receiver `name` to `localhost:port` over `tls`, trusting `ca` if given.
fn tls_email_receiver(name: &str, url: &str, tls: &str, to: &str, ca: Option<&Path>) -> String {
    let ca = ca
        .map(|ca| format!("ca_file = {:?}\n", ca))
        .unwrap_or_default();
    format!(
        r#"
[[receiver]]
name = "{name}"
[receiver.email]
smtp_url = "{url}"
tls = "{tls}"
from = "scimwatch@corp.example"
to = ["{to}"]
{ca}"#
    )
}

/// A relay that takes mail only after STARTTLS, with a certificate a private CA signed: the
/// receiver given the CA's file (`ca_file`) pages over TLS, and the one without it refuses the
/// certificate (it is checked, not waved through) and says why in the log, retrying, never
/// falling back to plain text. (No routes: every receiver gets every page.)
#[test]
fn pages_go_over_starttls_to_a_relay_a_private_ca_signed_and_only_if_the_ca_is_trusted() {
    let port = free_port();
    let url = format!("smtp://localhost:{port}");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let receivers =
        tls_email_receiver(
            "trusted",
            &url,
            "starttls",
            "iam-oncall@corp.example",
            Some(&pki.ca),
        ) + &tls_email_receiver("untrusted", &url, "starttls", "sre@corp.example", None);
    let setup = Setup::new(&config(&receivers));
    let inbox = setup.path("inbox");
    let _smtp = SmtpSink::start_tls(port, &inbox, "starttls", &pki);
    let daemon = setup.start();
    stuck_leaver(&setup);
    wait_until(WAIT, || !mails(&inbox).is_empty());
    wait_until(WAIT, || {
        setup
            .daemon_log()
            .contains("target_name=untrusted/email alert=LeaverDisableOverdue attempt=2")
    });
    assert_eq!(daemon.stop(), Some(0));
    let pages = mails(&inbox);
    assert_eq!(
        pages.len(),
        1,
        "only the receiver that trusts the CA: {pages:#?}"
    );
    assert!(subject(&pages[0]).contains("LeaverDisableOverdue"));
    assert!(pages[0].contains("X-Envelope-To: iam-oncall@corp.example"));
    assert!(pages[0].starts_with("X-TLS: TLSv1."), "{}", pages[0]);
    let log = setup.daemon_log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("target_name=untrusted/email") && l.contains("will retry"))
        .collect();
    assert!(!refused.is_empty(), "{log}");
    assert!(
        refused
            .iter()
            .all(|l| l.contains("UnknownIssuer") && l.contains("ca_file")),
        "the reason is the certificate's issuer, with the key that fixes it: {refused:#?}"
    );
}

/// Implicit TLS (port-465 style, TLS from the first byte) to a relay, and an `https://`
/// webhook, both with certificates a private CA signed and trusted through `ca_file`.
#[test]
fn implicit_tls_mail_and_an_https_webhook_trust_a_private_ca() {
    let (smtp_port, https_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut receivers = tls_email_receiver(
        "oncall",
        &format!("smtps://localhost:{smtp_port}"),
        "implicit",
        "iam-oncall@corp.example",
        Some(&pki.ca),
    );
    receivers.push_str(&format!(
        r#"
[[receiver]]
name = "hook"
[receiver.webhook]
url = "https://localhost:{https_port}/hook"
format = "json"
ca_file = {:?}

[[receiver]]
name = "hook-untrusted"
[receiver.webhook]
url = "https://localhost:{https_port}/untrusted"
format = "json"
"#,
        pki.ca
    ));
    let setup = Setup::new(&config(&receivers));
    let inbox = setup.path("inbox");
    let _smtp = SmtpSink::start_tls(smtp_port, &inbox, "implicit", &pki);
    let posted = setup.path("posted.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/https_sink.py");
    let mut https = Command::new(python())
        .arg(script)
        .arg(https_port.to_string())
        .arg(&pki.cert)
        .arg(&pki.key)
        .arg(&posted)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(https.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let daemon = setup.start();
    stuck_leaver(&setup);
    let bodies = || -> Vec<Value> {
        std::fs::read_to_string(&posted)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_until(WAIT, || !mails(&inbox).is_empty() && !bodies().is_empty());
    wait_until(WAIT, || {
        setup
            .daemon_log()
            .contains("target_name=hook-untrusted/webhook alert=LeaverDisableOverdue attempt=2")
    });
    assert_eq!(daemon.stop(), Some(0));
    let _ = https.kill();
    let _ = https.wait();
    let pages = mails(&inbox);
    assert_eq!(pages.len(), 1, "{pages:#?}");
    assert!(pages[0].starts_with("X-TLS: TLSv1."), "{}", pages[0]);
    assert!(subject(&pages[0]).contains("LeaverDisableOverdue"));
    let posts = bodies();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["path"], "/hook");
    assert!(
        posts[0]["body"]
            .as_str()
            .unwrap()
            .contains("LeaverDisableOverdue"),
        "{posts:#?}"
    );
    // The receiver without the CA refused its certificate, and the log says so (reqwest's own
    // text is only "error sending request") without the URL.
    let log = setup.daemon_log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("target_name=hook-untrusted/webhook") && l.contains("will retry"))
        .collect();
    assert!(!refused.is_empty(), "{log}");
    assert!(
        refused.iter().all(|l| l.contains("UnknownIssuer")
            && l.contains("ca_file")
            && !l.contains("/untrusted")),
        "{refused:#?}"
    );
    assert!(!setup.path("data/dead-letter.jsonl").exists());
}

/// Notifications waiting in the daemon's outbox (which it makes at start: a missing one is
/// counted as never empty, so a wrong path cannot pass).
fn outbox_entries(setup: &Setup) -> usize {
    if !setup.path("data/outbox").is_dir() {
        return usize::MAX;
    }
    scimwatch::notify::outbox::waiting_ids(&setup.path("data")).len()
}

#[test]
fn a_restart_neither_pages_again_nor_loses_the_resolve() {
    let port = free_port();
    let setup = Setup::new(&config(&email_receiver(port)));
    let inbox = setup.path("inbox");
    let _smtp = SmtpSink::start(port, &inbox);
    let daemon = setup.start();
    stuck_leaver(&setup);
    wait_until(WAIT, || !mails(&inbox).is_empty());
    // Delivery is at least once: a kill between the mail server's OK and the outbox entry's
    // removal sends the page again at the restart (the mail server holds it, the outbox still
    // does). This test is about a page fully recorded, so it waits for the removal.
    wait_until(WAIT, || outbox_entries(&setup) == 0);
    // No chance to checkpoint or flush: the alert state was written when it paged.
    daemon.kill9();
    let daemon = setup.start();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        mails(&inbox).len(),
        1,
        "no second page after the restart\n{}",
        setup.daemon_log()
    );
    leaver_disabled(&setup);
    wait_until(WAIT, || mails(&inbox).len() >= 2);
    let all = mails(&inbox);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        subject(&all[1]).starts_with("[RESOLVED:1] [page] LeaverDisableOverdue"),
        "{}",
        all[1]
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// One request a local receiver took.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    body: Value,
}

/// A real HTTP server on loopback that records each POST and answers from a script per path
/// (the last status repeats).
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(script: &[(&str, &[u16])]) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Vec<(String, Vec<u16>)> = script
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_vec()))
            .collect();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some((path, body)) = read_request(&mut stream) else {
                    continue;
                };
                let mut seen = seen.lock().unwrap();
                let nth = seen.iter().filter(|r: &&Request| r.path == path).count();
                let statuses = script
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| vec![404]);
                let status = statuses[nth.min(statuses.len() - 1)];
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.push(Request { path, body });
                drop(seen);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{{}}"
                );
            }
        });
        Receiver { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn at(&self, path: &str) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.body.clone())
            .collect()
    }
}

/// Reads one HTTP/1.1 request: (path, body).
fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let path = head.split(' ').nth(1)?.to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some((path, buffer[header_end..].to_vec()))
}

/// A credential file may be a pipe a secrets agent writes once (`password_file =
/// /run/secrets/...` as a FIFO): `run` reads each credential once, and pages with it. It read
/// every one twice (a check, then the notifier), and the second read of a pipe waits forever
/// for a writer: the daemon never started.
#[test]
fn a_credential_read_from_a_pipe_is_read_once_and_pages() {
    let receiver = Receiver::start(&[("/hook", &[200])]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("hook-url");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let url = receiver.url("/hook");
    let writer = {
        let fifo = fifo.clone();
        // Opening a pipe to write waits for its reader: one reader gets the URL, once.
        std::thread::spawn(move || std::fs::write(&fifo, url).unwrap())
    };
    let setup = Setup::new(&config(&format!(
        r#"
[[receiver]]
name = "hook"
[receiver.webhook]
url_file = "{}"
format = "json"
"#,
        fifo.display()
    )));
    let daemon = setup.start();
    writer.join().unwrap();
    stuck_leaver(&setup);
    wait_until(WAIT, || !receiver.at("/hook").is_empty());
    let pages = receiver.at("/hook");
    assert!(
        pages
            .iter()
            .any(|p| p.to_string().contains("root-admin@corp.example")),
        "{pages:?}\n{}",
        setup.daemon_log()
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn webhooks_speak_each_receivers_format_retry_5xx_and_dead_letter_4xx() {
    let receiver = Receiver::start(&[
        ("/am", &[500, 500, 202]),
        ("/pd", &[202]),
        ("/slack", &[200]),
        ("/api", &[200]),
        ("/json", &[204]),
        ("/bad", &[400]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let slack_url = dir.path().join("slack-url");
    std::fs::write(&slack_url, receiver.url("/slack")).unwrap();
    let receivers = format!(
        r#"
[[receiver]]
name = "am"
[receiver.webhook]
url = "{}"
format = "alertmanager"

[[receiver]]
name = "pd"
[receiver.webhook]
url = "{}"
format = "pagerduty"
routing_key_env = "SCIMWATCH_TEST_PD_KEY"

[[receiver]]
name = "slack"
[receiver.webhook]
url_file = "{}"
format = "slack"

[[receiver]]
name = "amapi"
[receiver.webhook]
url = "{}"
format = "alertmanager_api"

[[receiver]]
name = "own"
[receiver.webhook]
url = "{}"
format = "json"

[[receiver]]
name = "bad"
[receiver.webhook]
url = "{}"
format = "json"
"#,
        receiver.url("/am"),
        receiver.url("/pd"),
        slack_url.display(),
        receiver.url("/api"),
        receiver.url("/json"),
        receiver.url("/bad"),
    );
    let setup = Setup::new(&config(&receivers));
    std::env::set_var("SCIMWATCH_TEST_PD_KEY", "R0UTINGKEY0123456789");
    let daemon = setup.start();
    stuck_leaver(&setup);
    wait_until(WAIT, || {
        receiver.at("/am").len() >= 3
            && !receiver.at("/pd").is_empty()
            && !receiver.at("/json").is_empty()
    });
    let key = "LeaverDisableOverdue{app=vault,user=root-admin@corp.example}";

    // Alertmanager webhook v4, after 500, 500: delivered on the third try, and only then.
    let am = receiver.at("/am");
    assert_eq!(am.len(), 3, "{am:#?}");
    let body = &am[2];
    assert_eq!(body, &am[0], "the retry sends the same body");
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "am");
    assert!(body["groupKey"]
        .as_str()
        .unwrap()
        .contains("LeaverDisableOverdue"));
    let alert = &body["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["alertname"], "LeaverDisableOverdue");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(alert["labels"]["user"], "root-admin@corp.example");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert!(alert["startsAt"].as_str().unwrap().ends_with('Z'));
    assert!(alert["annotations"]["summary"]
        .as_str()
        .unwrap()
        .contains("root-admin"));
    assert!(alert["annotations"]["runbook_url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    assert_eq!(alert["fingerprint"].as_str().unwrap().len(), 16);

    // PagerDuty Events API v2.
    let pd = receiver.at("/pd");
    assert_eq!(pd.len(), 1);
    let event = &pd[0];
    assert_eq!(event["routing_key"], "R0UTINGKEY0123456789");
    assert_eq!(event["event_action"], "trigger");
    assert_eq!(event["dedup_key"], key);
    assert_eq!(event["payload"]["severity"], "critical");
    assert_eq!(event["payload"]["source"], "scimwatch");
    assert_eq!(event["payload"]["component"], "vault");
    assert_eq!(event["payload"]["class"], "LeaverDisableOverdue");
    assert!(event["payload"]["summary"].as_str().unwrap().len() <= 1024);
    assert!(event["payload"]["timestamp"].is_string());
    assert_eq!(event["links"][0]["text"], "Runbook");

    // Slack incoming webhook (its URL read from a file).
    let slack = receiver.at("/slack");
    assert_eq!(slack.len(), 1);
    let text = slack[0]["text"].as_str().unwrap();
    assert!(
        text.contains("*[FIRING] LeaverDisableOverdue*") && text.contains("root-admin"),
        "{text}"
    );

    // Alertmanager POST /api/v2/alerts: a list, ending after the next repeat.
    let api = receiver.at("/api");
    assert_eq!(api.len(), 1);
    let alert = &api[0][0];
    assert_eq!(alert["labels"]["alertname"], "LeaverDisableOverdue");
    assert!(alert["endsAt"].as_str().unwrap() > alert["startsAt"].as_str().unwrap());

    // scimwatch's own JSON.
    let own = receiver.at("/json");
    assert_eq!(own[0]["notifications"][0]["kind"], "firing");
    assert_eq!(own[0]["notifications"][0]["dedup_key"], key);

    // 400 is not retried: one request, then the dead-letter file.
    wait_until(WAIT, || setup.path("data/dead-letter.jsonl").exists());
    assert_eq!(receiver.at("/bad").len(), 1, "a 4xx is not retried");
    let dead = std::fs::read_to_string(setup.path("data/dead-letter.jsonl")).unwrap();
    let dead: Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(dead["target"], "bad/webhook");
    assert!(
        dead["error"].as_str().unwrap().contains("HTTP 400"),
        "{dead}"
    );
    assert_eq!(dead["notification"]["dedup_key"], key);

    // The resolve reaches every format.
    leaver_disabled(&setup);
    wait_until(WAIT, || {
        receiver.at("/pd").len() >= 2 && receiver.at("/am").len() >= 4
    });
    let resolve = &receiver.at("/pd")[1];
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(
        resolve["dedup_key"], key,
        "the same dedup_key resolves the incident"
    );
    let am = receiver.at("/am");
    assert_eq!(am[3]["status"], "resolved");
    assert!(!am[3]["alerts"][0]["endsAt"]
        .as_str()
        .unwrap()
        .starts_with("0001"));
    wait_until(WAIT, || {
        receiver.at("/api").len() >= 2 && receiver.at("/slack").len() >= 2
    });
    let api = receiver.at("/api");
    assert!(api[1][0]["endsAt"].as_str().unwrap() <= now().as_str());
    assert!(receiver.at("/slack")[1]["text"]
        .as_str()
        .unwrap()
        .contains("RESOLVED"));
    // Never a secret in the daemon's own log.
    assert!(!setup.daemon_log().contains("R0UTINGKEY0123456789"));
    assert_eq!(daemon.stop(), Some(0));
}

/// A real Alertmanager on loopback, clustering off. Killed on drop.
struct Alertmanager {
    child: Child,
    port: u16,
}

impl Alertmanager {
    fn start(dir: &Path) -> Alertmanager {
        let port = free_port();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian package; `make test` installs it)");
        let am = Alertmanager { child, port };
        wait_until(WAIT, || get(port, "/-/ready", None).0 == 200);
        am
    }

    fn alerts(&self) -> Vec<Value> {
        let (status, body) = get(self.port, "/api/v2/alerts", None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<Value>>(&body).unwrap()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_alertmanager_shows_the_alert_then_sees_it_resolved() {
    let am_dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(am_dir.path());
    let receivers = format!(
        r#"
[[receiver]]
name = "alertmanager"
[receiver.webhook]
url = "http://127.0.0.1:{}/api/v2/alerts"
format = "alertmanager_api"
"#,
        am.port
    );
    let setup = Setup::new(&config(&receivers));
    let daemon = setup.start();
    stuck_leaver(&setup);
    let overdue = |alerts: &[Value]| {
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "LeaverDisableOverdue")
    };
    wait_until(WAIT, || overdue(&am.alerts()));
    let alerts = am.alerts();
    let alert = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "LeaverDisableOverdue")
        .unwrap_or_else(|| panic!("not in Alertmanager: {alerts:#?}\n{}", setup.daemon_log()));
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(alert["labels"]["app"], "vault");
    assert_eq!(alert["labels"]["user"], "root-admin@corp.example");
    assert_eq!(alert["labels"]["severity"], "page");
    assert!(alert["annotations"]["summary"]
        .as_str()
        .unwrap()
        .contains("still not disabled"));
    // amtool, the operator's own view, agrees.
    let amtool = Command::new("amtool")
        .args([
            "alert",
            "query",
            "--alertmanager.url",
            &format!("http://127.0.0.1:{}", am.port),
            "alertname=LeaverDisableOverdue",
        ])
        .output()
        .expect("amtool");
    let listed = String::from_utf8_lossy(&amtool.stdout);
    assert!(listed.contains("LeaverDisableOverdue"), "{listed}");

    leaver_disabled(&setup);
    wait_until(WAIT, || !overdue(&am.alerts()));
    assert!(!overdue(&am.alerts()), "still active: {:#?}", am.alerts());
    let amtool = Command::new("amtool")
        .args([
            "alert",
            "query",
            "--alertmanager.url",
            &format!("http://127.0.0.1:{}", am.port),
            "alertname=LeaverDisableOverdue",
        ])
        .output()
        .expect("amtool");
    assert!(!String::from_utf8_lossy(&amtool.stdout).contains("LeaverDisableOverdue"));
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_black_holed_receiver_delays_nobody_elses_pages() {
    // Accepts connections and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming() {
            held.push(stream);
        }
    });
    let receiver = Receiver::start(&[("/ok", &[200])]);
    let receivers = format!(
        r#"
[[receiver]]
name = "hole"
[receiver.webhook]
url = "http://127.0.0.1:{hole_port}/hook"
format = "json"

[[receiver]]
name = "ok"
[receiver.webhook]
url = "{}"
format = "json"
"#,
        receiver.url("/ok")
    );
    let config = config(&receivers).replace("send_timeout_secs = 5", "send_timeout_secs = 60");
    let setup = Setup::new(&config);
    let daemon = setup.start();
    stuck_leaver(&setup);
    // The hole holds its send for a minute; the other receiver is paged meanwhile.
    wait_until(Duration::from_secs(30), || !receiver.at("/ok").is_empty());
    assert_eq!(receiver.at("/ok").len(), 1, "{}", setup.daemon_log());
    assert!(!setup.daemon_log().contains("Notification failed"));
    assert_eq!(daemon.stop(), Some(0));
}
