//! The shipped Prometheus rules, their unit tests, the Alertmanager example and the Grafana
//! dashboard, checked with the real tools (`make deps` installs Debian's prometheus and
//! prometheus-alertmanager packages).

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{program} ({e}) is installed by `make deps`"));
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_rules() {
    let (ok, out) = tool("promtool", &["check", "rules", "rules/scimwatch.rules.yml"]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 33 rules found"), "{out}");
}

#[test]
fn the_rule_unit_tests_pass_in_promtool() {
    let (ok, out) = tool(
        "promtool",
        &["test", "rules", "rules/tests/scimwatch.test.yml"],
    );
    assert!(ok, "{out}");
}

#[test]
fn every_alert_kind_has_a_rule_with_runbook_and_severity() {
    let rules = std::fs::read_to_string(root().join("rules/scimwatch.rules.yml")).unwrap();
    for kind in scimwatch::http::metrics::ALERT_KINDS {
        assert!(
            rules.contains(&format!("- alert: {kind}\n")),
            "no rule for {kind}"
        );
    }
    assert_eq!(
        rules.matches("- alert: ").count(),
        rules.matches("runbook_url:").count()
    );
    assert_eq!(
        rules.matches("- alert: ").count(),
        rules.matches("severity:").count()
    );
    for tier in ["fast", "slow", "ticket-fast", "ticket-slow"] {
        assert!(rules.contains(&format!("burn_tier: {tier}\n")), "{tier}");
    }
}

#[test]
fn amtool_accepts_the_alertmanager_example() {
    let (ok, out) = tool(
        "amtool",
        &["check-config", "rules/alertmanager.example.yml"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("5 inhibit rules"), "{out}");
}

#[test]
fn the_dashboard_is_provisionable_as_is() {
    let text = std::fs::read_to_string(root().join("dashboards/scimwatch.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["schemaVersion"], 39);
    assert!(
        dashboard.get("__inputs").is_none(),
        "no import-wizard inputs"
    );
    assert!(!text.contains("DS_PROMETHEUS"));
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["type"] == "datasource"
        && v["name"] == "datasource"
        && v["query"] == "prometheus"));
    let rows: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        ["Overview", "Stage: $stage", "Leavers", "Pipeline health"]
    );
    for panel in dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
    {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        assert!(
            !panel["targets"].as_array().unwrap().is_empty(),
            "{}",
            panel["title"]
        );
        // A heatmap of histogram buckets shows each bucket's own count only from targets
        // formatted as a heatmap; otherwise the cumulative buckets all show every leaver
        // (QA helper-56).
        if panel["type"] == "heatmap" {
            for target in panel["targets"].as_array().unwrap() {
                assert_eq!(target["format"], "heatmap", "{}", panel["title"]);
            }
        }
    }
    // The generator and the committed file agree.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("dashboards")).unwrap();
    let status = Command::new("python3")
        .arg(root().join("scripts/make-dashboard.py"))
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dashboards/scimwatch.json")).unwrap(),
        text,
        "re-run scripts/make-dashboard.py"
    );
}
