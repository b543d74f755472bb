//! Bad configs exit 2 with a message that names the key and its line; `check-config` prints
//! what it understood.

mod common;

use common::{bin, fixture};
use std::fs;

fn check(config_text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scimwatch.toml");
    fs::write(&path, config_text).unwrap();
    let output = bin()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
[[source]]
name = "idp"
role = "idp"
format = "json"
paths = ["idp.jsonl"]
[source.fields]
time = "/ts"
action = "/action"

[[source]]
name = "gw"
role = "gateway"
format = "nginx_json"
paths = ["gw.log*"]
"#;

#[test]
fn a_good_config_is_summarised() {
    let (code, stdout, stderr) = check(GOOD);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("source \"gw\": role gateway, format nginx_json"),
        "{stdout}"
    );
    assert!(stdout.contains("stale after 900s"), "{stdout}");
    // SourceStale's threshold per source: the alerting default, a source's own, and a
    // trigger source (an HR feed, quiet for hours) never unless it sets one.
    let hr = "\n[[source]]\nname = \"hr\"\nrole = \"trigger\"\nformat = \"json\"\npaths = [\"hr.jsonl\"]\n[source.fields]\ntime = \"/at\"\nuser_login = \"/email\"\nevent = \"/event\"\n[source.stages]\nleaver = [\"terminated\"]\n";
    let text = format!("{GOOD}{hr}").replace(
        "paths = [\"gw.log*\"]",
        "paths = [\"gw.log*\"]\nstale_after_secs = 7200",
    );
    let (code, stdout, stderr) = check(&format!("[alerting]\nstale_after_secs = 600\n{text}"));
    assert_eq!(code, 0, "{stderr}");
    for (source, stale) in [
        ("idp", "stale after 600s"),
        ("gw", "stale after 7200s"),
        ("hr", "never stale"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("source \"{source}\"")))
            .unwrap();
        assert!(line.contains(stale), "{line}");
    }
    assert!(
        stdout.contains("slo: healthy >= 0.99, incident < 0.95"),
        "{stdout}"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let text = GOOD.replace(
        "[source.fields]\ntime",
        "colour = \"blue\"\n[source.fields]\ntime",
    );
    let (code, _, stderr) = check(&text);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");
    assert!(stderr.contains("line 7"), "{stderr}");
}

/// A value of the wrong type or range is named by its key, not by the value (which once came
/// out as "`-1`: invalid value"), in its table and entry.
#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    for (text, key, line) in [
        (
            format!("{GOOD}\n[slo]\nmin_operations = -1\n"),
            "`slo.min_operations`",
            "line 18",
        ),
        (
            format!("{GOOD}\n[slo]\njoin_window_secs = \"20\"\n"),
            "`slo.join_window_secs`",
            "line 18",
        ),
        (
            GOOD.replace("time = \"/ts\"", "time = 5"),
            "`source[0].fields.time`",
            "line 8",
        ),
        (
            format!("{GOOD}\n[[receiver]]\nname = \"x\"\n[receiver.email]\ntls = \"maybe\"\n"),
            "`receiver[0].email.tls`",
            "line 20",
        ),
    ] {
        let (code, _, stderr) = check(&text);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(line),
            "{key} {line}: {stderr}"
        );
    }
}

#[test]
fn a_bad_pointer_names_the_field_and_line() {
    let text = GOOD.replace("time = \"/ts\"", "time = \"ts\"");
    let (code, _, stderr) = check(&text);
    assert_eq!(code, 2);
    assert!(stderr.contains("source[0].fields.time"), "{stderr}");
    assert!(stderr.contains("line 8:"), "{stderr}");
    assert!(stderr.contains("JSON Pointer"), "{stderr}");
}

#[test]
fn thresholds_in_the_wrong_order_are_refused() {
    let text = format!("{GOOD}\n[slo]\nhealthy_ratio = 0.9\nincident_ratio = 0.95\n");
    let (code, _, stderr) = check(&text);
    assert_eq!(code, 2);
    assert!(stderr.contains("slo.incident_ratio"), "{stderr}");
    assert!(stderr.contains("line 19:"), "{stderr}");
}

/// An SLO so low that a burn tier would need more than 100% errors is refused, with the
/// lowest one every tier can fire at (slo-alerting.md §1; helper-43's review).
#[test]
fn an_slo_a_burn_tier_can_never_fire_at_is_refused() {
    let text = format!("{GOOD}\n[slo]\nhealthy_ratio = 0.9\nincident_ratio = 0.85\n");
    let (code, _, stderr) = check(&text);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("slo.healthy_ratio"), "{stderr}");
    assert!(stderr.contains("fast burn tier"), "{stderr}");
    assert!(stderr.contains("at least 0.9306"), "{stderr}");
    let text = format!("{GOOD}\n[slo]\nhealthy_ratio = 0.9306\nincident_ratio = 0.85\n");
    let (code, _, stderr) = check(&text);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn an_unknown_format_lists_the_known_ones() {
    let (code, _, stderr) = check(&GOOD.replace("nginx_json", "nginx_yaml"));
    assert_eq!(code, 2);
    assert!(stderr.contains("source[1].format"), "{stderr}");
    assert!(stderr.contains("nginx_combined"), "{stderr}");
}

#[test]
fn a_config_without_a_gateway_is_refused() {
    let idp_only = GOOD.split("[[source]]\nname = \"gw\"").next().unwrap();
    let (code, _, stderr) = check(idp_only);
    assert_eq!(code, 2);
    assert!(stderr.contains("gateway"), "{stderr}");
}

#[test]
fn credentials_in_an_smtp_url_are_refused() {
    let text = format!(
        "{GOOD}\n[[receiver]]\nname = \"oncall\"\n[receiver.email]\nsmtp_url = \"smtp://u:p@mail:587\"\ntls = \"starttls\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n"
    );
    let (code, _, stderr) = check(&text);
    assert_eq!(code, 2);
    assert!(stderr.contains("receiver[0].email.smtp_url"), "{stderr}");
}

#[test]
fn a_missing_config_file_exits_2() {
    let output = bin()
        .args(["replay", "--config", "/nonexistent/scimwatch.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[test]
fn the_fixture_configs_are_valid() {
    let output = bin()
        .args([
            "check-config",
            "--config",
            fixture("core/scimwatch.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn alerting_keys_are_checked_by_name() {
    let (code, _, stderr) = check(&format!(
        "{GOOD}\n[alerting]\nseverity = {{ StageSucessIncident = \"page\" }}\n"
    ));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("alerting.severity.StageSucessIncident")
            && stderr.contains("unknown alert kind"),
        "{stderr}"
    );
    let (code, _, stderr) = check(&format!("{GOOD}\n[alerting]\ngroup_wiat_secs = 3\n"));
    assert_eq!(code, 2);
    assert!(stderr.contains("group_wiat_secs"), "{stderr}");
}

#[test]
fn a_webhook_takes_exactly_one_url_source() {
    let (code, _, stderr) = check(&format!(
        "{GOOD}\n[[receiver]]\nname = \"slack\"\n[receiver.webhook]\nurl = \"https://hooks.slack.test/x\"\nurl_env = \"SLACK_URL\"\nformat = \"slack\"\n"
    ));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("receiver[0].webhook.url") && stderr.contains("exactly one"),
        "{stderr}"
    );
}

/// Found by paging QA (helper-14): a route whose `alert` is a typo sent the page nowhere and
/// the file was called valid; `tls = "none"` sent the SMTP password in clear text to a
/// remote relay; an empty password file failed only at the first page.
#[test]
fn a_route_that_matches_no_alert_clear_text_credentials_and_an_empty_secret_are_refused() {
    let receiver = "\n[[receiver]]\nname = \"oncall\"\n[receiver.email]\nsmtp_url = \"smtp://127.0.0.1:2525\"\ntls = \"none\"\nfrom = \"a@corp.example\"\nto = [\"c@corp.example\"]\n";
    for (route, key, said) in [
        (
            "alert = \"LeaverOverdue\"",
            "route[0].match.alert",
            "LeaverDisableOverdue",
        ),
        (
            "stage = \"leavers\"",
            "route[0].match.stage",
            "joiner, mover, leaver",
        ),
        (
            "severity = \"critical\"",
            "route[0].match.severity",
            "page, ticket",
        ),
    ] {
        let text =
            format!("{GOOD}{receiver}[[route]]\nmatch = {{ {route} }}\nreceiver = \"oncall\"\n");
        let (code, _, stderr) = check(&text);
        assert_eq!(code, 2, "{route}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains("matches no alert") && stderr.contains(said),
            "{stderr}"
        );
    }
    // A severity of an alert's own that no route matches: a typo sent the page nowhere
    // (QA helper-54). One a route matches is fine.
    let routes = "[[route]]\nmatch = { severity = \"page\" }\nreceiver = \"oncall\"\n";
    let typo = format!("[alerting]\nseverity = {{ LeaverDisableOverdue = \"pgae\" }}\n{GOOD}");
    let (code, _, stderr) = check(&format!("{typo}{receiver}{routes}"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("alerting.severity.LeaverDisableOverdue") && stderr.contains("no route"),
        "{stderr}"
    );
    let routed = format!(
        "{}{receiver}{routes}[[route]]\nmatch = {{ severity = \"pgae\" }}\nreceiver = \"oncall\"\n",
        typo
    );
    let (code, _, stderr) = check(&routed);
    assert_eq!(code, 0, "{stderr}");
    let fine = format!(
        "{GOOD}{receiver}[[route]]\nmatch = {{ alert = \"LeaverDisableOverdue\", app = \"vault\" }}\nreceiver = \"oncall\"\n"
    );
    let (code, _, stderr) = check(&fine);
    assert_eq!(code, 0, "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let (user, password) = (dir.path().join("user"), dir.path().join("password"));
    fs::write(&user, "smtpuser\n").unwrap();
    fs::write(&password, "s3cret\n").unwrap();
    let credentials = format!(
        "username_file = \"{}\"\npassword_file = \"{}\"\n",
        user.display(),
        password.display()
    );
    let remote = format!(
        "{GOOD}{}{credentials}",
        receiver.replace("127.0.0.1:2525", "mail.corp.example:25")
    );
    let (code, _, stderr) = check(&remote);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("receiver[0].email.tls") && stderr.contains("clear text"),
        "{stderr}"
    );
    // On loopback (a local relay), or with TLS, the same credentials are fine.
    let (code, _, stderr) = check(&format!("{GOOD}{receiver}{credentials}"));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = check(&remote.replace("tls = \"none\"", "tls = \"starttls\""));
    assert_eq!(code, 0, "{stderr}");
    fs::write(&password, "\n").unwrap();
    let (code, _, stderr) = check(&format!("{GOOD}{receiver}{credentials}"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("email.password_file") && stderr.contains("is empty"),
        "{stderr}"
    );
}

/// What else paging QA (helper-14) found accepted: an smtps:// URL with STARTTLS (sent to
/// port 587), a secret given both as env and file (the env silently won), a routing key on a
/// webhook that is not PagerDuty (ignored), credentials in a webhook URL, and a username with
/// no password named as the username's problem.
#[test]
fn contradictory_paging_settings_are_refused_by_name() {
    let email = |extra: &str| {
        format!(
            "{GOOD}\n[[receiver]]\nname = \"oncall\"\n[receiver.email]\nsmtp_url = \"smtp://127.0.0.1:2525\"\ntls = \"none\"\nfrom = \"a@corp.example\"\nto = [\"c@corp.example\"]\n{extra}"
        )
    };
    let webhook =
        |lines: &str| format!("{GOOD}\n[[receiver]]\nname = \"hook\"\n[receiver.webhook]\n{lines}");
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("user");
    fs::write(&user, "smtpuser\n").unwrap();
    let cases = [
        (
            email("").replace("smtp://127.0.0.1:2525\"\ntls = \"none\"", "smtps://127.0.0.1:465\"\ntls = \"starttls\""),
            "receiver[0].email.tls",
            "implicit",
        ),
        (
            email("username_env = \"SMTP_USER\"\nusername_file = \"/run/secrets/user\"\n"),
            "receiver[0].email.username_file",
            "not both",
        ),
        (
            webhook("url = \"https://hooks.example/x\"\nformat = \"slack\"\nrouting_key_file = \"/run/key\"\n"),
            "receiver[0].webhook.routing_key_file",
            "pagerduty",
        ),
        (
            webhook("url = \"https://bob:hunter2@hooks.example/x\"\nformat = \"json\"\n"),
            "receiver[0].webhook.url",
            "credentials do not belong in the URL",
        ),
        (
            email(&format!("username_file = \"{}\"\n", user.display())),
            "email.password_file",
            "a username without a password",
        ),
    ];
    for (text, key, said) in cases {
        let (code, _, stderr) = check(&text);
        assert_eq!(code, 2, "{text}\n{stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(said),
            "{key} / {said}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn a_credential_that_does_not_resolve_is_named_before_anything_runs() {
    let text = format!(
        "{GOOD}\n[[receiver]]\nname = \"oncall\"\n[receiver.email]\nsmtp_url = \"smtp://127.0.0.1:2525\"\ntls = \"none\"\nfrom = \"a@corp.example\"\nto = [\"c@corp.example\"]\nusername_env = \"SCIMWATCH_TEST_UNSET_USER\"\npassword_file = \"/nonexistent/smtp-password\"\n"
    );
    let (code, stdout, stderr) = check(&text);
    assert_eq!(code, 2, "{stderr}");
    // Said as the config's own errors are: the file, the key's line, the key, what is wrong,
    // once (QA helper-29: it had no file, a receiver's name for the key, and "is not set:
    // environment variable not found").
    let line = text
        .lines()
        .position(|l| l.starts_with("username_env"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            ": line {line}: `receiver[0].email.username_env`: environment variable \
             SCIMWATCH_TEST_UNSET_USER is not set\n"
        )) && stderr.contains("scimwatch: config "),
        "{stderr}"
    );
    assert!(!stdout.contains("is valid"), "{stdout}");
    // `run` says it the same way, before it binds or locks anything.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scimwatch.toml");
    fs::write(&path, &text).unwrap();
    let output = bin()
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let run_stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{run_stderr}");
    assert!(
        run_stderr.contains(&format!(
            ": line {line}: `receiver[0].email.username_env`: environment variable"
        )),
        "{run_stderr}"
    );
}

/// A private CA's file for TLS: refused where there is no TLS to use it, and named when it
/// cannot be read or holds no certificate (a PEM reader takes such a file as no roots, and
/// every page would fail later, on the night it matters).
#[test]
fn a_ca_file_is_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let key_only = dir.path().join("key.pem");
    fs::write(
        &key_only,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let email = |tls: &str, ca: &str| {
        format!(
            "{GOOD}\n[[receiver]]\nname = \"oncall\"\n[receiver.email]\nsmtp_url = \"smtp://mail.corp.example\"\ntls = \"{tls}\"\nfrom = \"a@corp.example\"\nto = [\"c@corp.example\"]\nca_file = {ca:?}\n"
        )
    };
    let (code, _, stderr) = check(&email("none", "ca.pem"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("receiver[0].email.ca_file") && stderr.contains("needs tls"),
        "{stderr}"
    );
    let (code, stdout, stderr) = check(&email("starttls", key_only.to_str().unwrap()));
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stderr.contains("`receiver[0].email.ca_file`")
            && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
    let (code, _, stderr) = check(&email("implicit", "/nonexistent/ca.pem"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("email.ca_file") && stderr.contains("cannot read /nonexistent/ca.pem"),
        "{stderr}"
    );
    let webhook = format!(
        "{GOOD}\n[[receiver]]\nname = \"hook\"\n[receiver.webhook]\nurl = \"http://hooks.corp.example/x\"\nformat = \"json\"\nca_file = \"ca.pem\"\n"
    );
    let (code, _, stderr) = check(&webhook);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("receiver[0].webhook.ca_file") && stderr.contains("https://"),
        "{stderr}"
    );
    let (code, _, stderr) = check(
        &webhook
            .replace("http://", "https://")
            .replace("\"ca.pem\"", &format!("{key_only:?}")),
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("`receiver[0].webhook.ca_file`")
            && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
}

/// Listening beyond loopback without an API token would open /api/v1 (logins, IDs) to the
/// network: refused, naming the key and the way out; with a token it is accepted.
#[test]
fn a_listener_beyond_loopback_needs_an_api_token() {
    let open = format!("{GOOD}\n[server]\nlisten = \"0.0.0.0:9898\"\n");
    let (code, _, stderr) = check(&open);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("server.listen") && stderr.contains("api_token_env"),
        "{stderr}"
    );
    std::env::set_var("SCIMWATCH_TEST_LISTEN_TOKEN", "t0ken-for-the-network");
    let guarded = open.replace(
        "listen = \"0.0.0.0:9898\"",
        "listen = \"0.0.0.0:9898\"\napi_token_env = \"SCIMWATCH_TEST_LISTEN_TOKEN\"",
    );
    let (code, _, stderr) = check(&guarded);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = check(&format!("{GOOD}\n[server]\nlisten = \"[::1]:9898\"\n"));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn every_memory_cap_must_be_positive_and_is_named() {
    for key in [
        "max_pending_joins",
        "max_open_episodes",
        "max_known_names",
        "recent_operations",
    ] {
        let (code, _, stderr) = check(&format!("[pipeline]\n{key} = 0\n{GOOD}"));
        assert_eq!(code, 2, "{key}: {stderr}");
        assert!(
            stderr.contains(&format!("pipeline.{key}")) && stderr.contains("greater than 0"),
            "{key}: {stderr}"
        );
        let (code, _, stderr) = check(&format!("[pipeline]\n{key} = 5000\n{GOOD}"));
        assert_eq!(code, 0, "{key}: {stderr}");
    }
}

/// `check-config … | head -1`: a reader that has gone is not a crash (it once aborted on
/// `println!`'s broken-pipe panic, exit 134).
#[test]
fn a_closed_stdout_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scimwatch.toml");
    fs::write(&path, GOOD).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = bin()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A window of years would keep every write pending for ever (joins never settle): the SLO
/// windows and deadlines have maxima, named with the key.
#[test]
fn slo_windows_have_a_maximum() {
    for (line, key, max) in [
        (
            "join_window_secs = 18446744073709551615",
            "slo.join_window_secs",
            "86400",
        ),
        (
            "allowed_lateness_secs = 86401",
            "slo.allowed_lateness_secs",
            "86400",
        ),
        (
            "evaluation_window_secs = 2592001",
            "slo.evaluation_window_secs",
            "2592000",
        ),
        (
            "[[slo.high_risk]]\napps = [\"a\"]\ndisable_within_secs = 31536001",
            "slo.high_risk[0].disable_within_secs",
            "31536000",
        ),
    ] {
        let (code, _, stderr) = check(&format!("{GOOD}\n[slo]\n{line}\n"));
        assert_eq!(code, 2, "{line}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(&format!("maximum {max}")),
            "{line}: {stderr}"
        );
    }
    let (code, _, stderr) = check(&format!("{GOOD}\n[slo]\njoin_window_secs = 86400\n"));
    assert_eq!(code, 0, "{stderr}");
}

/// An API token asked for but empty (an empty file, an empty variable) is refused: taken as
/// "no token", it once served /api/v1 to anyone, and check-config called the config valid.
#[test]
fn an_empty_api_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scimwatch.toml");
    fs::write(
        &path,
        format!("[server]\napi_token_file = \"token\"\n{GOOD}"),
    )
    .unwrap();
    fs::write(dir.path().join("token"), "  \n").unwrap();
    for command in ["check-config", "run"] {
        let output = bin()
            .args([command, "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("server.api_token_file") && stderr.contains("empty"),
            "{command}: {stderr}"
        );
    }
}

/// A file named on `replay`'s command line that cannot be read as a log is bad usage (exit
/// 2), named with its flag: one that is not there, and a compressed rotation.
#[test]
fn replay_names_a_file_it_cannot_read_as_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scimwatch.toml");
    fs::write(&path, GOOD).unwrap();
    fs::write(dir.path().join("gw.log.2.gz"), b"\x1f\x8b\x08\x00").unwrap();
    for (flag, file, said) in [
        ("--idp", "missing.jsonl", "not a readable file"),
        ("--gateway", "gw.log.2.gz", "compressed"),
    ] {
        let output = bin()
            .args(["replay", "--config", path.to_str().unwrap(), flag])
            .arg(dir.path().join(file))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(file) && stderr.contains(said),
            "{flag}: {stderr}"
        );
    }
}

/// `--gateway` replaces the files of the one gateway source; with two it is bad usage (exit
/// 2), refused before `--parquet`'s store is locked or written to.
#[test]
fn replay_refuses_a_file_flag_that_fits_two_sources() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scimwatch.toml");
    let second = "\n[[source]]\nname = \"gw2\"\nrole = \"gateway\"\nformat = \"kong\"\npaths = [\"kong.log\"]\n";
    fs::write(&path, format!("{GOOD}{second}")).unwrap();
    fs::write(dir.path().join("gw.log"), "").unwrap();
    let store = dir.path().join("store");
    let output = bin()
        .args(["replay", "--config", path.to_str().unwrap(), "--gateway"])
        .arg(dir.path().join("gw.log"))
        .arg("--parquet")
        .arg(&store)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--gateway is ambiguous") && stderr.contains("gw, gw2"),
        "{stderr}"
    );
    assert!(!store.exists(), "the store was touched");
}

/// A source's own SourceStale threshold is held to the alerting one's bound, named with its
/// source; 0 (never) is allowed.
#[test]
fn a_source_s_stale_threshold_is_bounded() {
    let text = GOOD.replace(
        "paths = [\"gw.log*\"]",
        "paths = [\"gw.log*\"]\nstale_after_secs = 99999999",
    );
    let (code, _, stderr) = check(&text);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("source[1].stale_after_secs") && stderr.contains("2592000"),
        "{stderr}"
    );
    let (code, stdout, stderr) = check(&text.replace("99999999", "0"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("never stale"), "{stdout}");
}

/// `check-config` on GOOD (whose files do not exist in the temporary directory): valid, exit 0,
/// and a warning per source that matches no file, as `replay` gives (QA helper-29: it said
/// "0 file(s) match now" and nothing more, while a mistyped glob is the likeliest cause). It
/// prints the app aliases it understood.
#[test]
fn check_config_warns_of_a_source_that_matches_no_file() {
    let (code, stdout, stderr) = check(&format!(
        "{GOOD}\n[apps]\naliases = {{ \"github\" = [\"GitHub Enterprise\"] }}\n"
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: source \"idp\" has no files matching [\"idp.jsonl\"]")
            && stderr.contains("warning: source \"gw\" has no files matching [\"gw.log*\"]"),
        "{stderr}"
    );
    assert!(
        stdout.contains("app \"github\": also named [\"GitHub Enterprise\"]"),
        "{stdout}"
    );
}

/// `replay --threads` takes 1, 2 or 3, as its help says; 4 was taken silently as 3.
#[test]
fn replay_threads_is_one_two_or_three() {
    let output = bin()
        .args(["replay", "--config"])
        .arg(fixture("core/scimwatch.toml"))
        .args(["--threads", "4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("4 is not in 1..=3"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `--rows-per-file 0` wrote a Parquet file a row, where `pipeline.parquet_rows_per_file = 0`
/// is refused (QA helper-54).
#[test]
fn replay_rows_per_file_is_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = bin()
        .args(["replay", "--config"])
        .arg(fixture("core/scimwatch.toml"))
        .arg("--parquet")
        .arg(dir.path().join("data"))
        .args(["--rows-per-file", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--rows-per-file") && stderr.contains("greater than 0"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing written");
}

/// A value listed under two stages or two statuses is refused, naming both (it meant
/// whichever came last), and a field's source that is neither a string nor a list says what
/// it should be, not "data did not match any variant of untagged enum" (QA helper-54).
#[test]
fn a_value_under_two_stages_or_statuses_and_a_field_of_the_wrong_type_are_refused() {
    let gw = "\n[[source]]\nname = \"gw\"";
    for (table, key, said) in [
        (
            "[source.status]\nsuccess = [\"ok\"]\nfailure = [\"OK\"]\n",
            "source[0].status.failure",
            "\"OK\" is also listed under success",
        ),
        (
            "[source.stages]\njoiner = [\"x\"]\nleaver = [\"x\"]\n",
            "source[0].stages.leaver",
            "\"x\" is also listed under joiner",
        ),
    ] {
        let text = GOOD.replace(gw, &format!("{table}{gw}"));
        assert_ne!(text, GOOD);
        let (code, _, stderr) = check(&text);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(key) && stderr.contains(said), "{stderr}");
    }
    let (code, _, stderr) = check(&GOOD.replace("time = \"/ts\"", "time = 5"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("source[0].fields.time") && stderr.contains("a JSON Pointer"),
        "{stderr}"
    );
}

/// A spelling names one app: one under two names, a name that is another's spelling (a
/// chain), or two names that differ only in case, is refused, naming it (QA helper-64: the
/// names' order settled it, silently, and an app's high-risk deadline was lost).
#[test]
fn an_alias_naming_two_apps_is_refused() {
    for (aliases, named) in [
        (
            r#"{ "Salesforce" = ["sfdc"], "sfdc" = ["salesforce.corp.example"] }"#,
            r#"apps.aliases.sfdc`: "sfdc" already names "Salesforce""#,
        ),
        (
            r#"{ "Salesforce" = ["crm"], "hubspot" = ["CRM"] }"#,
            r#"apps.aliases.hubspot`: "CRM" already names "Salesforce""#,
        ),
        (
            r#"{ "Salesforce" = [], "salesforce" = ["sf"] }"#,
            r#""salesforce" already names "Salesforce""#,
        ),
    ] {
        let (code, _, stderr) = check(&format!("{GOOD}\n[apps]\naliases = {aliases}\n"));
        assert_eq!(code, 2, "{aliases}: {stderr}");
        assert!(stderr.contains(named), "{aliases}: {stderr}");
    }
    let fine = r#"{ "Salesforce" = ["salesforce", "SFDC"], "hubspot" = ["crm"] }"#;
    let (code, _, stderr) = check(&format!("{GOOD}\n[apps]\naliases = {fine}\n"));
    assert_eq!(code, 0, "{stderr}");
}
