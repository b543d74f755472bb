//! The report as a person reads it during an incident: worst news first, each failure with
//! what to do about it, and where to look.

use super::{Report, SloStatus};
use std::fmt::Write;

/// `1320` → `22m 00s`.
pub fn human_duration(seconds: f64) -> String {
    let total = seconds.round() as i64;
    let (d, h, m, s) = (
        total / 86_400,
        (total % 86_400) / 3600,
        (total % 3600) / 60,
        total % 60,
    );
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

fn percent(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn status_word(status: SloStatus) -> &'static str {
    match status {
        SloStatus::Healthy => "healthy",
        SloStatus::Degraded => "DEGRADED",
        SloStatus::Incident => "INCIDENT",
        SloStatus::InsufficientData => "insufficient data",
    }
}

/// Renders the text report.
/// How many causes the text shows (the JSON lists them all).
const CAUSES_SHOWN: usize = 6;

/// A line saying a list shows `shown` of `total` and where the rest are, when it does not
/// show them all.
fn more(out: &mut String, total: usize, shown: usize, what: &str, rest: &str) {
    if total > shown {
        let _ = writeln!(out, "  … and {} more {what} ({rest})", total - shown);
    }
}

/// Where every operation a sample list leaves out is.
const EVERY_OPERATION: &str = "with `--parquet`, every one is a row of the `operations` table";

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let as_of = report
        .as_of
        .map_or("(no events)".to_string(), |t| t.to_string());
    let _ = writeln!(out, "scimwatch report as of {as_of}\n");
    let _ = writeln!(
        out,
        "{:<8} {:>6} {:>9} {:>7} {:>11} {:>8}  status",
        "stage", "ops", "succeeded", "failed", "unconfirmed", "success"
    );
    for stage in crate::model::Stage::ALL.map(crate::model::Stage::as_str) {
        let Some(s) = report.stages.get(stage) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{:<8} {:>6} {:>9} {:>7} {:>11} {:>8}  {}",
            stage,
            s.operations,
            s.succeeded,
            s.failed,
            s.unconfirmed,
            percent(s.success_rate),
            status_word(s.status)
        );
    }
    let _ = writeln!(
        out,
        "\nskipped by the IdP: {}   unattributed writes: {}   disagreements: {}",
        report.skipped, report.unattributed, report.disagreements
    );

    if !report.top_causes.is_empty() {
        let _ = writeln!(out, "\nTop causes");
        for cause in report.top_causes.iter().take(CAUSES_SHOWN) {
            let _ = writeln!(
                out,
                "  {:>5}  {:<20} {}",
                cause.count,
                cause.cause.as_str(),
                cause.hint
            );
            if !cause.samples.is_empty() {
                let _ = writeln!(
                    out,
                    "         {:<20} e.g. {}",
                    "",
                    cause
                        .samples
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        more(
            &mut out,
            report.top_causes.len(),
            CAUSES_SHOWN,
            "causes",
            "`--format json` lists them all",
        );
    }

    let l = &report.leavers;
    let _ = writeln!(
        out,
        "\nLeavers: {} episodes, {} disabled, {} open, {} cancelled by rehire, {} breached",
        l.episodes, l.disabled, l.open, l.cancelled, l.breaches
    );
    if let (Some(p50), Some(p95), Some(max)) = (
        l.latency_seconds.p50,
        l.latency_seconds.p95,
        l.latency_seconds.max,
    ) {
        let _ = writeln!(
            out,
            "  disable latency p50 {}  p95 {}  max {}",
            human_duration(p50),
            human_duration(p95),
            human_duration(max)
        );
    }
    if !l.breached.is_empty() {
        let _ = writeln!(out, "\nBreached leavers (deadline missed)");
        for b in &l.breached {
            let risk = if b.high_risk { "HIGH-RISK" } else { "standard" };
            let what = match (b.disabled_at, b.latency_seconds) {
                (Some(at), Some(latency)) => {
                    format!("disabled {at} after {}", human_duration(latency))
                }
                _ => "STILL NOT DISABLED".to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<9} {} / {}  initiated {}  {}  (deadline {})",
                risk,
                b.app,
                b.user,
                b.initiated_at,
                what,
                human_duration(b.deadline_seconds as f64)
            );
            if !b.correlation_ids.is_empty() {
                let _ = writeln!(
                    out,
                    "            operations: {}",
                    b.correlation_ids.join(", ")
                );
            }
        }
    }
    if !report.post_disable_activity.is_empty() {
        let _ = writeln!(
            out,
            "\nRequests made as a user after their account was disabled (security)"
        );
        for a in &report.post_disable_activity {
            let _ = writeln!(
                out,
                "  {}  {} / {}  {} {} -> {}  (disabled {}){}",
                a.time,
                a.app,
                a.user,
                a.method,
                a.path,
                a.status,
                a.disabled_at,
                a.correlation_id
                    .as_ref()
                    .map_or(String::new(), |c| format!("  id {c}"))
            );
        }
    }
    if !report.disagreement_samples.is_empty() {
        let _ = writeln!(
            out,
            "\nDisagreements (IdP and target contradict each other)"
        );
        for d in &report.disagreement_samples {
            let _ = writeln!(
                out,
                "  {}  {} {}  IdP said {}, target answered {}  {}",
                d.time,
                d.stage.as_str(),
                d.correlation_id.as_deref().unwrap_or("-"),
                d.idp_status.unwrap_or("-"),
                d.http_status.map_or("-".into(), |s| s.to_string()),
                d.app.as_deref().unwrap_or("")
            );
        }
        more(
            &mut out,
            report.disagreements as usize,
            report.disagreement_samples.len(),
            "disagreements",
            EVERY_OPERATION,
        );
    }
    if !report.unattributed_samples.is_empty() {
        let _ = writeln!(
            out,
            "\nUnattributed writes (no IdP record: manual change, another client, a stolen token?)"
        );
        for u in &report.unattributed_samples {
            let _ = writeln!(
                out,
                "  {}  {} {} -> {}  {}",
                u.time,
                u.method.as_deref().unwrap_or("-"),
                u.path.as_deref().unwrap_or("-"),
                u.http_status.map_or("-".into(), |s| s.to_string()),
                u.app.as_deref().unwrap_or("")
            );
        }
        more(
            &mut out,
            report.unattributed as usize,
            report.unattributed_samples.len(),
            "unattributed writes",
            EVERY_OPERATION,
        );
    }
    let one_sided = &report.one_sided_apps;
    if !one_sided.idp.is_empty() && !one_sided.gateway.is_empty() {
        // Names only: which pairs are one app is for a person to say (a Host header is the
        // client's to choose), and the alias's key must be the name the high-risk patterns
        // use, or a high-risk app's leavers fall to the standard deadline.
        let _ = writeln!(
            out,
            "\nApps only one side names (one app under two names? map them with [apps] aliases, \
             keyed by the name your [[slo.high_risk]] patterns use)"
        );
        let _ = writeln!(
            out,
            "  the IdP's, never answered at the gateway: {}",
            one_sided.idp.join(", ")
        );
        let _ = writeln!(
            out,
            "  the gateway's, claimed by no IdP record:  {}",
            one_sided.gateway.join(", ")
        );
    }
    let total_errors: u64 = report.parse_errors.values().sum();
    let _ = writeln!(
        out,
        "\nLines read: {}",
        report
            .lines
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if total_errors > 0 {
        let _ = writeln!(out, "Lines set aside (not parsed): {total_errors}");
        for (source, reasons) in &report.parse_errors_by_reason {
            if reasons.is_empty() {
                continue;
            }
            let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(out, "  {source}: {}", detail.join(", "));
        }
        for sample in &report.parse_error_samples {
            let _ = writeln!(
                out,
                "  {}:{} (offset {})  {}: {}",
                sample.file, sample.line, sample.offset, sample.reason, sample.detail
            );
        }
    }
    out
}
