//! What a page says, in each receiver's own format: plain-text email, Alertmanager webhook v4,
//! Alertmanager `POST /api/v2/alerts`, PagerDuty Events API v2 and Slack. Pure functions of the
//! notifications: no secrets pass through here except PagerDuty's routing key, which goes only
//! into its own request body.

use crate::alert::{Notification, NotificationKind};
use crate::time::Ts;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Links every page carries.
#[derive(Debug, Clone)]
pub struct Links {
    /// Base runbook URL; `#<alert, lower case>` is appended.
    pub runbook: String,
    pub dashboard: Option<String>,
    /// How often a firing alert repeats (said in the page, and Alertmanager's `endsAt`).
    pub repeat_interval_secs: u64,
}

impl Links {
    pub fn runbook_for(&self, alert: &str) -> String {
        let base = self.runbook.split('#').next().unwrap_or(&self.runbook);
        format!("{base}#{}", alert.to_lowercase())
    }
}

fn status_word(n: &Notification) -> &'static str {
    match n.kind {
        NotificationKind::Resolved => "RESOLVED",
        NotificationKind::Firing | NotificationKind::Repeat => "FIRING",
    }
}

fn is_resolved(n: &Notification) -> bool {
    n.kind == NotificationKind::Resolved
}

/// Prometheus-style labels: `alertname`, `severity` and the identifying labels.
pub fn labels(n: &Notification) -> BTreeMap<String, String> {
    let mut labels = n.condition.labels.clone();
    labels.insert("alertname".into(), n.condition.alert.clone());
    labels.insert("severity".into(), n.condition.severity.clone());
    labels
}

fn description(n: &Notification) -> String {
    n.condition.details.join("\n")
}

fn annotations(n: &Notification, links: &Links) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".into(), n.condition.summary.clone());
    annotations.insert("description".into(), description(n));
    annotations.insert("runbook_url".into(), links.runbook_for(&n.condition.alert));
    if let Some(dashboard) = &links.dashboard {
        annotations.insert("dashboard".into(), dashboard.clone());
    }
    annotations
}

/// A short stable hash: Alertmanager fingerprints, over-long PagerDuty dedup keys.
fn digest(text: &str) -> String {
    let hash = Sha256::digest(text.as_bytes());
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// PagerDuty's `dedup_key` (at most 255 characters): the alert's dedup key, hashed if longer.
pub fn pagerduty_dedup_key(n: &Notification) -> String {
    if n.dedup_key.len() <= 255 {
        n.dedup_key.clone()
    } else {
        format!("{}-{}", n.condition.alert, digest(&n.dedup_key))
    }
}

/// The email subject of a group (all of one alert kind).
pub fn email_subject(batch: &[Notification]) -> String {
    let firing = batch.iter().filter(|n| !is_resolved(n)).count();
    let resolved = batch.len() - firing;
    let first = &batch[0];
    let status = match (firing, resolved) {
        (_, 0) => format!("FIRING:{firing}"),
        (0, _) => format!("RESOLVED:{resolved}"),
        _ => format!("FIRING:{firing} RESOLVED:{resolved}"),
    };
    let what = if batch.len() == 1 {
        first.condition.summary.clone()
    } else {
        format!("{} alerts", batch.len())
    };
    let mut subject = format!(
        "[{status}] [{}] {}: {what}",
        first.condition.severity, first.condition.alert
    );
    if subject.len() > 200 {
        let mut cut = 197;
        while !subject.is_char_boundary(cut) {
            cut -= 1;
        }
        subject.truncate(cut);
        subject.push_str("...");
    }
    subject
}

/// The plain-text email body: what, the numbers, causes with hints, IDs, links.
pub fn email_body(batch: &[Notification], links: &Links, host: &str) -> String {
    let mut out = String::new();
    for (i, n) in batch.iter().enumerate() {
        if i > 0 {
            out.push_str("\n----------------------------------------\n\n");
        }
        let c = &n.condition;
        out.push_str(&format!(
            "{} {} ({})\n",
            status_word(n),
            c.alert,
            c.severity
        ));
        if n.kind == NotificationKind::Repeat {
            out.push_str("(still firing: a reminder)\n");
        }
        out.push_str(&format!("{}\n\n", c.summary));
        for line in &c.details {
            out.push_str(line);
            out.push('\n');
        }
        if !c.details.is_empty() {
            out.push('\n');
        }
        let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("Labels: {}\n", labels.join(" ")));
        out.push_str(&format!("Firing since: {}\n", n.firing_since));
        if is_resolved(n) {
            out.push_str(&format!("Resolved at: {}\n", n.at));
        }
        out.push_str(&format!("Dedup key: {}\n", n.dedup_key));
        out.push_str(&format!("Runbook: {}\n", links.runbook_for(&c.alert)));
        if let Some(dashboard) = &links.dashboard {
            out.push_str(&format!("Dashboard: {dashboard}\n"));
        }
    }
    let every = crate::alert::conditions::window_name(links.repeat_interval_secs);
    out.push_str(&format!(
        "\n-- \nscimwatch on {host}. A firing alert is sent again every {every} while it holds, and once more when it resolves.\n"
    ));
    out
}

fn rfc3339(ts: Ts) -> String {
    ts.to_string()
}

/// Alertmanager's webhook v4 body (what Alertmanager itself POSTs to a webhook receiver).
/// `still_firing`: the group's alerts sent firing before and not resolved, which are not in
/// the batch. Alertmanager sends every alert of a group, and calls the group resolved only
/// once all are: a receiver tracking incidents by `groupKey` closed one with two leavers
/// still overdue when the third's resolve came alone (QA helper-55).
pub fn alertmanager_webhook(
    receiver: &str,
    batch: &[Notification],
    still_firing: &[Notification],
    links: &Links,
) -> Value {
    let everything: Vec<&Notification> = batch.iter().chain(still_firing).collect();
    let batch = everything.as_slice();
    let alerts: Vec<Value> = batch
        .iter()
        .map(|n| {
            json!({
                "status": if is_resolved(n) { "resolved" } else { "firing" },
                "labels": labels(n),
                "annotations": annotations(n, links),
                "startsAt": rfc3339(n.firing_since),
                "endsAt": if is_resolved(n) { rfc3339(n.at) } else { "0001-01-01T00:00:00Z".into() },
                "generatorURL": links.dashboard.clone().unwrap_or_default(),
                "fingerprint": digest(&n.dedup_key),
            })
        })
        .collect();
    let all: Vec<BTreeMap<String, String>> = batch.iter().map(|n| labels(n)).collect();
    let common = |maps: &[BTreeMap<String, String>]| -> BTreeMap<String, String> {
        let mut common = maps.first().cloned().unwrap_or_default();
        common.retain(|k, v| maps.iter().all(|m| m.get(k) == Some(v)));
        common
    };
    let all_annotations: Vec<BTreeMap<String, String>> =
        batch.iter().map(|n| annotations(n, links)).collect();
    let alertname = batch
        .first()
        .map(|n| n.condition.alert.clone())
        .unwrap_or_default();
    let firing = batch.iter().any(|n| !is_resolved(n));
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": {"alertname": alertname},
        "commonLabels": common(&all),
        "commonAnnotations": common(&all_annotations),
        "externalURL": links.dashboard.clone().unwrap_or_else(|| links.runbook.clone()),
        "alerts": alerts,
    })
}

/// Alertmanager's `POST /api/v2/alerts` body. A firing alert's `endsAt` lies past the next
/// repeat (Alertmanager resolves an alert nobody refreshes); a resolve ends it now.
pub fn alertmanager_api(batch: &[Notification], links: &Links) -> Value {
    let alerts: Vec<Value> = batch
        .iter()
        .map(|n| {
            let ends = if is_resolved(n) {
                n.at
            } else {
                n.at.plus_secs(links.repeat_interval_secs.saturating_add(3600))
            };
            json!({
                "labels": labels(n),
                "annotations": annotations(n, links),
                "startsAt": rfc3339(n.firing_since),
                "endsAt": rfc3339(ends),
                "generatorURL": links.dashboard.clone().unwrap_or_else(|| links.runbook_for(&n.condition.alert)),
            })
        })
        .collect();
    Value::Array(alerts)
}

/// PagerDuty severity from ours.
fn pagerduty_severity(severity: &str) -> &'static str {
    match severity {
        "page" | "critical" => "critical",
        "error" => "error",
        "ticket" | "warning" => "warning",
        _ => "info",
    }
}

/// One PagerDuty Events API v2 event: trigger (firing, repeat) or resolve, one per alert.
pub fn pagerduty_event(n: &Notification, routing_key: &str, links: &Links) -> Value {
    let dedup_key = pagerduty_dedup_key(n);
    if is_resolved(n) {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let c = &n.condition;
    let mut summary = c.summary.clone();
    if summary.len() > 1024 {
        let mut cut = 1021;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
        summary.push_str("...");
    }
    let mut custom: BTreeMap<String, Value> = c
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    custom.insert("details".into(), json!(c.details));
    custom.insert("firing_since".into(), json!(rfc3339(n.firing_since)));
    let mut links_out = vec![json!({"href": links.runbook_for(&c.alert), "text": "Runbook"})];
    if let Some(dashboard) = &links.dashboard {
        links_out.push(json!({"href": dashboard, "text": "Dashboard"}));
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "source": "scimwatch",
            "severity": pagerduty_severity(&c.severity),
            "timestamp": rfc3339(n.at),
            "component": c.labels.get("app").cloned().unwrap_or_else(|| "scim".into()),
            "group": c.labels.get("stage").cloned().unwrap_or_else(|| "provisioning".into()),
            "class": c.alert,
            "custom_details": custom,
        },
        "links": links_out,
    })
}

/// A Slack incoming-webhook message (mrkdwn text).
pub fn slack(batch: &[Notification], links: &Links) -> Value {
    let mut text = String::new();
    for n in batch {
        let c = &n.condition;
        let icon = if is_resolved(n) {
            ":white_check_mark:"
        } else {
            ":rotating_light:"
        };
        text.push_str(&format!(
            "{icon} *[{}] {}* ({})\n{}\n",
            status_word(n),
            c.alert,
            c.severity,
            c.summary
        ));
        if !is_resolved(n) {
            for line in &c.details {
                text.push_str(&format!("> {line}\n"));
            }
        }
        text.push_str(&format!("<{}|Runbook>", links.runbook_for(&c.alert)));
        if let Some(dashboard) = &links.dashboard {
            text.push_str(&format!(" · <{dashboard}|Dashboard>"));
        }
        text.push_str("\n\n");
    }
    json!({ "text": text.trim_end() })
}

/// scimwatch's own JSON: the notifications as they are.
pub fn own_json(receiver: &str, batch: &[Notification], links: &Links) -> Value {
    json!({
        "receiver": receiver,
        "notifications": batch,
        "runbook_url": links.runbook,
        "dashboard_url": links.dashboard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Condition;

    fn notification(kind: NotificationKind, user: &str) -> Notification {
        let condition = Condition {
            alert: "LeaverDisableOverdue".into(),
            severity: "page".into(),
            labels: [("app", "vault"), ("user", user)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            summary: format!("{user} is still not disabled — ünïcode"),
            details: vec!["User: x".into()],
        };
        Notification {
            kind,
            dedup_key: condition.dedup_key(),
            condition,
            firing_since: Ts::from_secs(1_782_892_800),
            at: Ts::from_secs(1_782_893_800),
        }
    }

    fn links() -> Links {
        Links {
            runbook: "https://runbooks.test/scim#alerts".into(),
            dashboard: Some("https://grafana.test/d/x".into()),
            repeat_interval_secs: 3600,
        }
    }

    #[test]
    fn a_group_has_common_labels_and_per_alert_status() {
        let batch = [
            notification(NotificationKind::Firing, "a@corp.example"),
            notification(NotificationKind::Resolved, "b@corp.example"),
        ];
        let body = alertmanager_webhook("oncall", &batch, &[], &links());
        assert_eq!(body["status"], "firing");
        assert_eq!(body["commonLabels"]["app"], "vault");
        assert!(body["commonLabels"].get("user").is_none());
        assert_eq!(body["alerts"][1]["status"], "resolved");
        assert_eq!(body["alerts"][1]["endsAt"], "2026-07-01T08:16:40Z");
        assert_eq!(
            body["alerts"][0]["annotations"]["runbook_url"],
            "https://runbooks.test/scim#leaverdisableoverdue"
        );
        assert_eq!(
            email_subject(&batch),
            "[FIRING:1 RESOLVED:1] [page] LeaverDisableOverdue: 2 alerts"
        );
        // A resolve sent alone while another alert of its group still fires: the group is
        // firing, and holds both, as Alertmanager sends them (QA helper-55).
        let resolve = [notification(NotificationKind::Resolved, "b@corp.example")];
        let still = [notification(NotificationKind::Firing, "a@corp.example")];
        let body = alertmanager_webhook("oncall", &resolve, &still, &links());
        assert_eq!(body["status"], "firing");
        assert_eq!(body["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(body["alerts"][0]["status"], "resolved");
        assert_eq!(body["alerts"][1]["status"], "firing");
        let alone = alertmanager_webhook("oncall", &resolve, &[], &links());
        assert_eq!(alone["status"], "resolved");
    }

    #[test]
    fn pagerduty_keys_are_stable_and_at_most_255_characters() {
        let short = notification(NotificationKind::Firing, "a@corp.example");
        assert_eq!(pagerduty_dedup_key(&short), short.dedup_key);
        let long = notification(NotificationKind::Firing, &"x".repeat(300));
        let key = pagerduty_dedup_key(&long);
        assert!(key.len() <= 255);
        assert_eq!(key, pagerduty_dedup_key(&long.clone()));
        let resolve = pagerduty_event(
            &notification(NotificationKind::Resolved, &"x".repeat(300)),
            "k",
            &links(),
        );
        assert_eq!(
            resolve["dedup_key"],
            key.as_str(),
            "the resolve closes the same incident"
        );
        assert_eq!(resolve["event_action"], "resolve");
    }

    #[test]
    fn a_long_subject_is_cut_on_a_character_boundary() {
        let mut n = notification(NotificationKind::Firing, "a@corp.example");
        n.condition.summary = "ü".repeat(300);
        let subject = email_subject(&[n]);
        assert!(subject.len() <= 200 && subject.ends_with("..."));
    }
}
