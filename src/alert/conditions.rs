//! Which alert conditions hold at an instant: a pure function of the live SLO windows, the
//! recent evidence, the open leaver episodes and the sources' freshness — no clock, no I/O, so
//! the same state gives the same pages.
//!
//! The thresholds mirror `rules/scimwatch.rules.yml`, so a team paging from Prometheus and a
//! team paging from the daemon are paged for the same things.

use super::evidence::Evidence;
use super::Condition;
use crate::config::{AlertingConfig, SloConfig};
use crate::judge::Episode;
use crate::model::Stage;
use crate::slo::{WindowCounts, Windows};
use crate::time::Ts;
use std::collections::BTreeMap;

/// Everything the conditions are judged on.
pub struct Inputs<'a> {
    pub clock: Ts,
    /// Every operation and write before it has been judged (the engine's
    /// `episodes_final_before`: the clock less the allowed lateness and a join window, or the
    /// earliest one still pending). The SLO windows and the evidence windows end here: an
    /// operation is judged a join window plus the lateness after its time, so a window ending
    /// at `clock` was missing its newest part, and the fast burn tier's 5 minutes were always
    /// empty (helper-43's review). Prometheus's rules count at judgment, so they lag as much.
    pub judged_until: Ts,
    /// The same for requests made as a disabled user: they are checked a join window later
    /// still ([`crate::engine::Engine`]'s timeline), so a post-disable window ending at
    /// `clock` was past every request by the time it was seen, and never paged.
    pub requests_judged_until: Ts,
    pub slo: &'a SloConfig,
    pub alerting: &'a AlertingConfig,
    pub windows: &'a Windows,
    pub evidence: &'a Evidence,
    /// Open leaver episodes in listing order; only overdue high-risk ones matter, so the
    /// daemon passes just those.
    pub open_episodes: &'a [&'a Episode],
    /// How fresh each source is.
    pub sources: Vec<Freshness<'a>>,
    /// Every file read to its end: only then is a silent source really silent.
    pub caught_up: bool,
    /// The `app` label an app's counts have in the metrics the rules read (`other` for a name
    /// no IdP record or the config gives): the security alerts count by it, so the daemon and
    /// the rules page for the same apps.
    pub app_label: &'a dyn Fn(&str) -> String,
}

/// A source's newest event and how long it may be silent.
#[derive(Debug, Clone, Copy)]
pub struct Freshness<'a> {
    pub source: &'a str,
    pub last_event: Option<Ts>,
    /// Since when the daemon has watched it (kept across restarts): a source with no line yet
    /// has been silent since then (a mistyped `paths` glob matches nothing, and must not go
    /// unnoticed).
    pub watched_since: Ts,
    /// SourceStale's threshold for it ([`crate::config::SourceConfig::stale_after`]); 0 never.
    pub stale_after_secs: u64,
}

/// Multi-window burn-rate tiers (SRE workbook, ch. 5): tier, long and short window, factor,
/// default severity.
pub const BURN_TIERS: [(&str, u64, u64, f64, &str); 4] = [
    ("fast", 3600, 300, 14.4, "page"),
    ("slow", 21_600, 1800, 6.0, "page"),
    ("ticket-fast", 86_400, 7200, 3.0, "ticket"),
    ("ticket-slow", 259_200, 21_600, 1.0, "ticket"),
];

/// How long the evidence must reach back: the longest window a page quotes it over, a burn
/// tier's long window included (the 6 h, 1 d and 3 d tiers paged with counts and no causes
/// when it was kept an hour). The store is capped at `evidence::CAPACITY` entries whatever
/// the time.
pub fn evidence_horizon_secs(slo: &SloConfig, alerting: &AlertingConfig) -> u64 {
    BURN_TIERS
        .iter()
        .map(|tier| tier.1)
        .chain([
            slo.evaluation_window_secs,
            alerting.auth_failure_window_secs,
            alerting.unattributed_window_secs,
            alerting.post_disable_window_secs,
        ])
        .max()
        .unwrap_or(3600)
}

/// How long the per-app counts must reach back: the security alerts' windows, the
/// post-disable one ending a join window before the others ([`Inputs::requests_judged_until`]).
pub fn counts_horizon_secs(slo: &SloConfig, alerting: &AlertingConfig) -> u64 {
    [
        alerting.auth_failure_window_secs,
        alerting.unattributed_window_secs,
        alerting.post_disable_window_secs + slo.join_window_secs,
    ]
    .into_iter()
    .max()
    .unwrap_or(3600)
}

/// How many sample correlation IDs and causes a page carries.
const SAMPLES: usize = 5;
const TOP_CAUSES: usize = 3;
/// Apps that get an alert of their own from what only the gateway says (its app may come from
/// a client's `Host` header): the ones with the most, then one alert for the rest, `app` =
/// `other`, as the metrics' `app` label does. Made-up names cannot make thousands of alerts.
const MAX_GATEWAY_APPS: usize = crate::http::metrics::MAX_APPS;

/// The `MAX_GATEWAY_APPS − 1` apps with the highest counts (ties by name), and the rest.
fn busiest<T>(
    mut by_app: Vec<T>,
    count: impl Fn(&T) -> u64,
    app: impl Fn(&T) -> &str,
) -> (Vec<T>, Vec<T>) {
    if by_app.len() <= MAX_GATEWAY_APPS {
        return (by_app, Vec::new());
    }
    by_app.sort_by(|a, b| count(b).cmp(&count(a)).then_with(|| app(a).cmp(app(b))));
    let rest = by_app.split_off(MAX_GATEWAY_APPS - 1);
    (by_app, rest)
}

/// Counts by app, gathered under their `app` label ([`Inputs::app_label`]), each app with
/// what it brings (`T`).
struct Group<T> {
    label: String,
    count: u64,
    members: Vec<(String, T)>,
}

/// Whether a group stands for the apps with no label of their own, or beyond the cap.
fn is_other<T>(group: &Group<T>) -> bool {
    group.label == "other"
}

fn grouped<T>(
    inputs: &Inputs,
    by_app: impl IntoIterator<Item = (String, T, u64)>,
) -> Vec<Group<T>> {
    let mut groups: BTreeMap<String, Group<T>> = BTreeMap::new();
    for (app, item, count) in by_app {
        let label = (inputs.app_label)(&app);
        let group = groups.entry(label.clone()).or_insert_with(|| Group {
            label,
            count: 0,
            members: Vec::new(),
        });
        group.count += count;
        group.members.push((app, item));
    }
    groups.into_values().collect()
}

/// The [`busiest`] groups, the rest folded into `other` (with the apps already there).
fn capped<T>(groups: Vec<Group<T>>) -> Vec<Group<T>> {
    let (mut kept, rest) = busiest(groups, |g| g.count, |g| &g.label);
    if !rest.is_empty() {
        let other = match kept.iter().position(is_other) {
            Some(i) => kept.remove(i),
            None => Group {
                label: "other".into(),
                count: 0,
                members: Vec::new(),
            },
        };
        kept.push(rest.into_iter().fold(other, |mut other, group| {
            other.count += group.count;
            other.members.extend(group.members);
            other
        }));
    }
    kept
}

/// The first names of a group's apps, `…` after them if there are more.
fn some_names<T>(group: &Group<T>) -> String {
    let names: Vec<&str> = (group.members.iter().take(SAMPLES))
        .map(|(app, _)| app.as_str())
        .collect();
    let more = if group.members.len() > names.len() {
        ", …"
    } else {
        ""
    };
    format!("{}{more}", names.join(", "))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pct(ratio: Option<f64>) -> String {
    ratio.map_or("n/a".into(), |r| format!("{:.1}%", 100.0 * r))
}

/// `3600` → `1h`, `600` → `10m`, `90` → `90s`.
pub fn window_name(secs: u64) -> String {
    match secs {
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The evidence lines of a stage: top causes with their hints, sample correlation IDs.
fn stage_evidence(inputs: &Inputs, stage: Stage, since: Ts) -> Vec<String> {
    let mut details = Vec::new();
    let causes = inputs.evidence.top_causes(Some(stage), None, since);
    if !causes.is_empty() {
        details.push("Top causes:".into());
        for (cause, count) in causes.iter().take(TOP_CAUSES) {
            details.push(format!("  {} ×{count}: {}", cause.as_str(), cause.hint()));
        }
    }
    let samples = inputs
        .evidence
        .sample_failures(Some(stage), None, since, SAMPLES);
    if !samples.is_empty() {
        details.push(format!("Sample correlation IDs: {}", samples.join(", ")));
    }
    details
}

fn counts_line(c: &WindowCounts, stage: Stage, window: u64) -> String {
    format!(
        "{} of {} {} operations failed or are unconfirmed in the last {} ({} failed, {} unconfirmed, {} succeeded)",
        c.failed + c.unconfirmed,
        c.operations(),
        stage.as_str(),
        window_name(window),
        c.failed,
        c.unconfirmed,
        c.succeeded
    )
}

/// Where a page's windows end, for the on-call reading it.
fn until_line(judged_until: Ts) -> String {
    format!("Windows end at {judged_until}: operations after it are still within the join window")
}

/// Every condition that holds at `inputs.clock`, in a stable order.
pub fn evaluate(inputs: &Inputs) -> Vec<Condition> {
    let mut out = Vec::new();
    stage_conditions(inputs, &mut out);
    leaver_conditions(inputs, &mut out);
    security_conditions(inputs, &mut out);
    source_conditions(inputs, &mut out);
    out
}

fn condition(
    inputs: &Inputs,
    alert: &str,
    default_severity: &str,
    labels: BTreeMap<String, String>,
    summary: String,
    details: Vec<String>,
) -> Condition {
    Condition {
        alert: alert.into(),
        severity: inputs.alerting.severity_of(alert, default_severity),
        labels,
        summary,
        details,
    }
}

fn stage_conditions(inputs: &Inputs, out: &mut Vec<Condition>) {
    let slo = inputs.slo;
    let judged = inputs.judged_until;
    let end = crate::slo::WindowEnd {
        judged: inputs.judged_until,
        clock: inputs.clock,
    };
    for stage in Stage::ALL {
        let window = slo.evaluation_window_secs;
        let c = inputs.windows.counts(stage, window, end);
        let since = judged.minus_secs(window);
        let status = crate::report::SloStatus::judge(c.succeeded, c.operations(), slo);
        let incident = (
            "StageSuccessIncident",
            "page",
            slo.incident_ratio,
            "incident",
        );
        let degraded = (
            "StageSuccessDegraded",
            "ticket",
            slo.healthy_ratio,
            "healthy",
        );
        // Below the incident threshold is below the healthy one too: Degraded holds through an
        // incident (the incident inhibits its notifications, as rules/alertmanager.example.yml
        // does), so getting worse does not resolve the ticket.
        let kinds = match status {
            crate::report::SloStatus::Incident => vec![incident, degraded],
            crate::report::SloStatus::Degraded => vec![degraded],
            _ => vec![],
        };
        // One stage's evidence, the same for both.
        let details = (!kinds.is_empty()).then(|| {
            let mut details = vec![counts_line(&c, stage, window), until_line(judged)];
            details.extend(stage_evidence(inputs, stage, since));
            details
        });
        for (alert, severity, threshold, name) in kinds {
            out.push(condition(
                inputs,
                alert,
                severity,
                labels(&[("stage", stage.as_str())]),
                format!(
                    "SCIM {} success {} over the last {} is below the {name} threshold {} ({} of {} operations failed or unconfirmed)",
                    stage.as_str(),
                    pct(c.ratio()),
                    window_name(window),
                    pct(Some(threshold)),
                    c.failed + c.unconfirmed,
                    c.operations()
                ),
                details.clone().unwrap_or_default(),
            ));
        }
        let budget = 1.0 - slo.healthy_ratio;
        if budget <= 0.0 {
            continue;
        }
        for (tier, long, short, factor, severity) in BURN_TIERS {
            let l = inputs.windows.counts(stage, long, end);
            let s = inputs.windows.counts(stage, short, end);
            if l.operations() < slo.min_operations {
                continue; // too few operations for a ratio to mean anything
            }
            let burn = |c: &WindowCounts| c.ratio().map(|r| (1.0 - r) / budget);
            let (Some(long_burn), Some(short_burn)) = (burn(&l), burn(&s)) else {
                continue;
            };
            if long_burn > factor && short_burn > factor {
                let mut details = vec![
                    counts_line(&l, stage, long),
                    counts_line(&s, stage, short),
                    until_line(judged),
                    format!(
                        "Burn rate {long_burn:.1}× over {} and {short_burn:.1}× over {} (threshold {factor}× of a {} SLO)",
                        window_name(long),
                        window_name(short),
                        pct(Some(slo.healthy_ratio))
                    ),
                ];
                details.extend(stage_evidence(inputs, stage, judged.minus_secs(long)));
                out.push(condition(
                    inputs,
                    "ErrorBudgetBurn",
                    severity,
                    labels(&[("burn_tier", tier), ("stage", stage.as_str())]),
                    format!(
                        "SCIM {} error budget burning at {long_burn:.1}× ({} and {} windows over {factor}×)",
                        stage.as_str(),
                        window_name(long),
                        window_name(short)
                    ),
                    details,
                ));
            }
        }
    }
}

fn leaver_conditions(inputs: &Inputs, out: &mut Vec<Condition>) {
    let clock = inputs.clock;
    let overdue = || {
        inputs
            .open_episodes
            .iter()
            .filter(|episode| episode.high_risk && episode.due_at() < clock)
    };
    let wanted = overdue()
        .flat_map(|episode| episode.correlation_ids.iter().map(String::as_str))
        .collect();
    let causes_by_id = inputs.evidence.causes_by_id(&wanted);
    for episode in overdue() {
        let user = episode.user();
        let age = clock.secs_since(episode.initiated_at).max(0.0);
        let mut details = vec![
            format!("User: {user}"),
            format!("App: {}", episode.app),
            format!(
                "Initiated at {} by {} ({:.0}s ago; deadline {}s, due {})",
                episode.initiated_at,
                episode.initiated_by,
                age,
                episode.deadline_seconds,
                episode.due_at()
            ),
            match episode.first_attempt_at {
                Some(t) => format!("First disable attempt at {t}; no target has answered 2xx"),
                None => "No disable request has reached the target yet".into(),
            },
        ];
        if !episode.correlation_ids.is_empty() {
            let ids: Vec<&str> = episode
                .correlation_ids
                .iter()
                .rev()
                .take(SAMPLES)
                .map(String::as_str)
                .collect();
            details.push(format!("Correlation IDs: {}", ids.join(", ")));
        }
        let causes = causes_by_id.causes_of(&episode.correlation_ids, episode.initiated_at);
        for (cause, count) in causes.iter().take(TOP_CAUSES) {
            details.push(format!(
                "  failed with {} ×{count}: {}",
                cause.as_str(),
                cause.hint()
            ));
        }
        out.push(condition(
            inputs,
            "LeaverDisableOverdue",
            "page",
            labels(&[("app", &episode.app), ("user", episode.alert_user())]),
            format!(
                "High-risk leaver {user} in {} is still not disabled {} after {} (deadline {})",
                episode.app,
                crate::report::text::human_duration(age),
                episode.initiated_by,
                window_name(episode.deadline_seconds)
            ),
            details,
        ));
    }
}

fn security_conditions(inputs: &Inputs, out: &mut Vec<Condition>) {
    let a = inputs.alerting;
    let since = (inputs.requests_judged_until).minus_secs(a.post_disable_window_secs);
    for (app, (count, events)) in inputs.evidence.post_disable_by_app(since) {
        // The counts are kept by whole minutes and reach back up to a minute past the window;
        // the requests themselves are exact. With none left in the window the alert is over
        // (it held on for that minute and resolved saying "0 disabled user(s)").
        if events.is_empty() {
            continue;
        }
        let users: Vec<String> = {
            let mut u: Vec<String> = events.iter().filter_map(|e| e.user.clone()).collect();
            u.sort();
            u.dedup();
            u
        };
        let mut details = vec![format!("Users: {}", users.join(", "))];
        for event in events.iter().rev().take(SAMPLES) {
            details.push(format!(
                "  {} {} as {} (correlation ID {})",
                event.time,
                event.what.as_deref().unwrap_or("request"),
                event.user.as_deref().unwrap_or("?"),
                event.cid.as_deref().unwrap_or("-")
            ));
        }
        details.push(
            "Hint: the account is disabled but its credentials still work: revoke its API tokens and sessions in the app".into(),
        );
        out.push(condition(
            inputs,
            "PostDisableActivity",
            "page",
            labels(&[("app", &app)]),
            format!(
                "{} request(s) in {} in the last {} were made as {} disabled user(s)",
                count,
                app,
                window_name(a.post_disable_window_secs),
                users.len()
            ),
            details,
        ));
    }
    let judged = inputs.judged_until;
    let since = judged.minus_secs(a.auth_failure_window_secs);
    // Counted by `app` label, as the rules count: refusals spread over 150 made-up Host names,
    // none over the threshold on its own, paged `other` in Prometheus and nothing here
    // (QA helper-56).
    let refused = inputs.evidence.auth_failures_by_app(since);
    let groups = grouped(inputs, refused.into_iter().map(|(app, n)| (app, (), n)));
    let over = (groups.into_iter()).filter(|g| g.count >= a.auth_failure_threshold);
    // (Quoted from where the counts begin, whole minutes.)
    let from = crate::alert::evidence::counts_from(since);
    let window = window_name(a.auth_failure_window_secs);
    for group in capped(over.collect()) {
        let (app, count) = (group.label.as_str(), group.count);
        let apps: Vec<&str> = group.members.iter().map(|(app, _)| app.as_str()).collect();
        let (summary, mut details) = if is_other(&group) {
            let summary = format!(
                "SCIM calls to {} other apps are refused (401/403): {count} in the last {window}",
                apps.len()
            );
            let detail = format!(
                "{count} operations were refused with 401/403 in the last {window} (threshold {}) \
                 by apps with no label of their own (no IdP record or config names them, or \
                 beyond the {} with the most): {}; so many apps at once is more likely made-up \
                 Host names, or one token tried everywhere, than expired tokens",
                a.auth_failure_threshold,
                MAX_GATEWAY_APPS - 1,
                some_names(&group)
            );
            (summary, vec![detail])
        } else {
            let summary = format!(
                "SCIM calls to {app} are refused (401/403): {count} in the last {window}; rotate the SCIM token"
            );
            let mut details = vec![format!(
                "{count} operations to {app} were refused with 401/403 in the last {window} (threshold {})",
                a.auth_failure_threshold
            )];
            for (cause, n) in inputs.evidence.top_causes(None, Some(app), from) {
                if matches!(
                    cause,
                    crate::model::Cause::Unauthorized | crate::model::Cause::Forbidden
                ) {
                    details.push(format!("  {} ×{n}: {}", cause.as_str(), cause.hint()));
                }
            }
            (summary, details)
        };
        let unattributed: usize = (apps.iter())
            .map(|app| inputs.evidence.unattributed_auth_failures(app, from))
            .sum();
        if unattributed > 0 {
            details.push(format!(
                "  {unattributed} of them writes with no IdP record: a client other than the IdP \
                 holds a token for {app} (a leaked one?): find it before rotating"
            ));
        }
        let samples: Vec<String> = (apps.iter())
            .flat_map(|app| inputs.evidence.sample_auth_failures(app, from, SAMPLES))
            .take(SAMPLES)
            .collect();
        if !samples.is_empty() {
            details.push(format!("Sample correlation IDs: {}", samples.join(", ")));
        }
        out.push(condition(
            inputs,
            "ScimAuthFailures",
            "page",
            labels(&[("app", app)]),
            summary,
            details,
        ));
    }
    let since = judged.minus_secs(a.unattributed_window_secs);
    let writes = inputs.evidence.unattributed_by_app(since, SAMPLES);
    let groups = grouped(inputs, writes);
    for group in capped(groups) {
        let (app, count) = (group.label.as_str(), group.count);
        let samples: Vec<&str> = (group.members.iter())
            .flat_map(|(_, samples)| samples.iter().map(String::as_str))
            .take(SAMPLES)
            .collect();
        let (summary, hint) = if is_other(&group) {
            (
                format!(
                    "{count} SCIM write(s) to {} other apps in the last {} have no IdP record",
                    group.members.len(),
                    window_name(a.unattributed_window_secs)
                ),
                format!(
                    "Hint: apps with no label of their own (no IdP record or config names them, \
                     or beyond the {} with the most): {}; writes to so many apps at once are \
                     more likely made-up Host names than hand edits: look at who sends them",
                    MAX_GATEWAY_APPS - 1,
                    some_names(&group)
                ),
            )
        } else {
            (
                format!(
                    "{count} SCIM write(s) to {app} in the last {} have no IdP record",
                    window_name(a.unattributed_window_secs)
                ),
                "Hint: a hand edit, another client or a stolen SCIM token: find who holds the token".into(),
            )
        };
        out.push(condition(
            inputs,
            "UnattributedWrites",
            "ticket",
            labels(&[("app", app)]),
            summary,
            vec![format!("Sample writes: {}", samples.join(", ")), hint],
        ));
    }
}

fn source_conditions(inputs: &Inputs, out: &mut Vec<Condition>) {
    if !inputs.caught_up {
        return;
    }
    for source in &inputs.sources {
        let (name, last) = (source.source, source.last_event);
        let silent = inputs
            .clock
            .secs_since(last.unwrap_or(source.watched_since));
        if source.stale_after_secs > 0 && silent > source.stale_after_secs as f64 {
            let since = match last {
                Some(last) => format!("newest event {last}"),
                None => format!(
                    "none since scimwatch began watching it at {}",
                    source.watched_since
                ),
            };
            out.push(condition(
                inputs,
                "SourceStale",
                "page",
                labels(&[("source", name)]),
                format!(
                    "No line from source {name} for {} ({since}): scimwatch is blind",
                    // (In seconds under two minutes: a threshold under a minute said "0 min",
                    // QA helper-55.)
                    if silent < 120.0 {
                        format!("{silent:.0} s")
                    } else {
                        format!("{:.0} min", silent / 60.0)
                    }
                ),
                vec![
                    "Hint: check the log shipper, the source's paths and the file permissions"
                        .into(),
                ],
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::evidence::{Notable, NotableKind};
    use crate::judge::EpisodeState;
    use crate::model::{Cause, Outcome};

    const T0: i64 = 1_782_892_800;

    fn at(secs: i64) -> Ts {
        Ts::from_secs(T0 + secs)
    }

    struct World {
        slo: SloConfig,
        alerting: AlertingConfig,
        windows: Windows,
        evidence: Evidence,
        episodes: Vec<Episode>,
        sources: Vec<Freshness<'static>>,
        caught_up: bool,
        /// The apps with an `app` label of their own (None: every app).
        labelled: Option<Vec<&'static str>>,
    }

    impl World {
        fn new() -> World {
            World {
                slo: SloConfig::default(),
                alerting: AlertingConfig::default(),
                windows: Windows::default(),
                evidence: Evidence::default(),
                episodes: Vec::new(),
                sources: Vec::new(),
                caught_up: true,
                labelled: None,
            }
        }
        /// `ok` successes and `bad` failures (cause `cause`) of a stage, spread over the
        /// `spread` seconds before `now`.
        fn ops(&mut self, stage: Stage, ok: u64, bad: u64, cause: Cause, now: i64, spread: i64) {
            let total = (ok + bad).max(1) as i64;
            for i in 0..ok + bad {
                let time = at(now - spread * i as i64 / total);
                let outcome = if i < bad {
                    Outcome::Failed
                } else {
                    Outcome::Succeeded
                };
                self.windows.record(stage, outcome, time);
                if outcome == Outcome::Failed {
                    self.evidence.push(Notable {
                        counted: None,
                        time,
                        kind: NotableKind::Failure,
                        stage: Some(stage),
                        app: "jira".into(),
                        cause: Some(cause),
                        cid: Some(format!("c-{i}")),
                        user: Some(format!("u{i}@corp.example")),
                        what: None,
                    });
                }
            }
        }
        fn eval(&self, now: i64) -> Vec<Condition> {
            let open: Vec<&Episode> = self.episodes.iter().collect();
            evaluate(&Inputs {
                clock: at(now),
                judged_until: at(now),
                requests_judged_until: at(now),
                slo: &self.slo,
                alerting: &self.alerting,
                windows: &self.windows,
                evidence: &self.evidence,
                open_episodes: &open,
                sources: self.sources.clone(),
                caught_up: self.caught_up,
                app_label: &|app| match &self.labelled {
                    Some(apps) if !apps.contains(&app) => "other".into(),
                    _ => app.to_string(),
                },
            })
        }
    }

    fn keys(conditions: &[Condition]) -> Vec<String> {
        conditions.iter().map(Condition::dedup_key).collect()
    }

    #[test]
    fn a_failing_stage_is_an_incident_with_its_numbers_causes_and_ids() {
        let mut w = World::new();
        w.ops(Stage::Leaver, 9, 3, Cause::Unauthorized, 3000, 600);
        // 9 of 12 = 75% with ≥ 20 needed: nothing yet.
        assert!(w
            .eval(3000)
            .iter()
            .all(|c| c.alert != "StageSuccessIncident"));
        w.ops(Stage::Leaver, 10, 0, Cause::Unauthorized, 3000, 600);
        let all = w.eval(3000);
        let incident = all
            .iter()
            .find(|c| c.alert == "StageSuccessIncident")
            .expect("incident");
        assert_eq!(incident.severity, "page");
        assert!(
            incident.summary.contains("3 of 22 operations"),
            "{}",
            incident.summary
        );
        let details = incident.details.join("\n");
        assert!(
            details.contains("3 of 22 leaver operations failed"),
            "{details}"
        );
        assert!(
            details.contains("unauthorized ×3: SCIM token expired"),
            "{details}"
        );
        assert!(details.contains("Sample correlation IDs: c-"), "{details}");
    }

    #[test]
    fn burn_tiers_need_both_windows_and_the_minimum_volume() {
        let mut w = World::new();
        w.slo.min_operations = 100;
        // 30% errors, but only 50 operations in the hour: no burn alert.
        w.ops(Stage::Mover, 35, 15, Cause::ServerError, 3000, 120);
        assert!(!keys(&w.eval(3000))
            .iter()
            .any(|k| k.starts_with("ErrorBudgetBurn")));
        w.ops(Stage::Mover, 70, 30, Cause::ServerError, 3000, 120);
        let all = keys(&w.eval(3000));
        assert!(
            all.contains(&"ErrorBudgetBurn{burn_tier=fast,stage=mover}".to_string()),
            "{all:?}"
        );
        // 30 minutes later the 5-minute window is quiet: the fast tier no longer holds, the
        // slow one (6h and 30m) still does.
        let later = keys(&w.eval(3000 + 1800 - 240));
        assert!(
            !later.iter().any(|k| k.contains("burn_tier=fast")),
            "{later:?}"
        );
        assert!(
            later.iter().any(|k| k.contains("burn_tier=slow")),
            "{later:?}"
        );
    }

    /// A slow burn quotes the causes of its long window: failures 90 minutes old were pruned
    /// from the evidence after an hour, and the slow and ticket tiers paged with counts only
    /// (QA helper-14, F9).
    #[test]
    fn a_slow_burn_page_still_names_the_causes_of_its_window() {
        let mut w = World::new();
        w.ops(Stage::Mover, 60, 40, Cause::Conflict, 0, 600);
        let now = 5400;
        w.evidence.prune(
            at(now),
            evidence_horizon_secs(&w.slo, &w.alerting),
            counts_horizon_secs(&w.slo, &w.alerting),
        );
        let all = w.eval(now);
        let slow = all
            .iter()
            .find(|c| {
                c.labels
                    .get("burn_tier")
                    .is_some_and(|t| t == "ticket-fast")
            })
            .expect("the ticket-fast tier holds");
        let details = slow.details.join("\n");
        assert!(details.contains("conflict"), "{details}");
    }

    #[test]
    fn auth_failures_page_per_app_above_the_threshold_with_the_rotate_hint() {
        let mut w = World::new();
        w.ops(Stage::Joiner, 0, 2, Cause::Unauthorized, 100, 10);
        assert!(w.eval(100).iter().all(|c| c.alert != "ScimAuthFailures"));
        w.ops(Stage::Joiner, 0, 1, Cause::Forbidden, 100, 10);
        let all = w.eval(100);
        let auth = all.iter().find(|c| c.alert == "ScimAuthFailures").unwrap();
        assert_eq!(auth.labels["app"], "jira");
        assert!(auth.summary.contains("rotate the SCIM token"));
        // Out of the 15-minute window (whole minutes): gone.
        assert!(w
            .eval(100 + 960)
            .iter()
            .all(|c| c.alert != "ScimAuthFailures"));
    }

    /// Writes no IdP record claims, refused with 401, page as ScimAuthFailures for their app
    /// (a client other than the IdP holds a token), besides the UnattributedWrites ticket.
    #[test]
    fn unattributed_writes_refused_with_401_page_as_auth_failures() {
        let mut w = World::new();
        for i in 0..3 {
            w.evidence.push(Notable {
                counted: None,
                time: at(10 + i),
                kind: NotableKind::Unattributed,
                stage: Some(Stage::Mover),
                app: "github".into(),
                cause: Some(Cause::Unauthorized),
                cid: Some(format!("stolen-{i}")),
                user: None,
                what: Some("PATCH /scim/v2/Users/9 -> 401".into()),
            });
        }
        let all = w.eval(30);
        assert_eq!(
            keys(&all),
            [
                "ScimAuthFailures{app=github}",
                "UnattributedWrites{app=github}"
            ]
        );
        let details = all[0].details.join("\n");
        assert!(
            details.contains("3 of them writes with no IdP record")
                && details.contains("stolen-2, stolen-1, stolen-0"),
            "{details}"
        );
    }

    /// The HTTP QA pass's flood: writes, refused with 401, to thousands of made-up apps (a
    /// client's `Host` header) made an alert each. The busiest 63 keep theirs; the rest are one
    /// alert, `app` = `other`.
    #[test]
    fn writes_to_a_flood_of_made_up_apps_make_a_bounded_number_of_alerts() {
        let mut w = World::new();
        for i in 0..200u32 {
            // app-0 gets the most writes, then app-1 …; each over the auth failure threshold.
            for n in 0..(w.alerting.auth_failure_threshold + u64::from(200 - i)) {
                w.evidence.push(Notable {
                    counted: None,
                    time: at(10),
                    kind: NotableKind::Unattributed,
                    stage: Some(Stage::Mover),
                    app: format!("app-{i:03}"),
                    cause: Some(Cause::Unauthorized),
                    cid: Some(format!("x-{i}-{n}")),
                    user: None,
                    what: Some("PATCH /scim/v2/Users/9 -> 401".into()),
                });
            }
        }
        let all = w.eval(30);
        for alert in ["ScimAuthFailures", "UnattributedWrites"] {
            let of: Vec<&Condition> = all.iter().filter(|c| c.alert == alert).collect();
            assert_eq!(of.len(), MAX_GATEWAY_APPS, "{alert}");
            let apps: Vec<&str> = of.iter().map(|c| c.labels["app"].as_str()).collect();
            assert!(
                apps.contains(&"app-000") && apps.contains(&"app-062"),
                "{apps:?}"
            );
            assert!(
                !apps.contains(&"app-063") && apps.contains(&"other"),
                "{apps:?}"
            );
            let other = of.iter().find(|c| c.labels["app"] == "other").unwrap();
            assert!(
                other.summary.contains("137 other apps"),
                "{}",
                other.summary
            );
        }
    }

    /// Refusals spread over many made-up Host names, none over the threshold alone, count
    /// together under `other`, as `scimwatch_operations_total{app="other"}` does for the rules:
    /// Prometheus paged for them and the daemon did not (QA helper-56). An app with a label of
    /// its own stays under its threshold alone.
    #[test]
    fn refusals_to_apps_without_a_label_of_their_own_count_together_as_other() {
        let mut w = World::new();
        w.labelled = Some(vec!["jira"]);
        let mut write = |app: String, cid: String| {
            w.evidence.push(Notable {
                counted: None,
                time: at(10),
                kind: NotableKind::Unattributed,
                stage: Some(Stage::Mover),
                app,
                cause: Some(Cause::Unauthorized),
                cid: Some(cid),
                user: None,
                what: Some("PATCH /scim/v2/Users/9 -> 401".into()),
            });
        };
        for i in 0..150 {
            write(format!("evil-{i:03}"), format!("e-{i}"));
        }
        write("jira".into(), "j-1".into());
        write("jira".into(), "j-2".into());
        let all = w.eval(30);
        assert_eq!(
            keys(&all),
            [
                "ScimAuthFailures{app=other}",
                "UnattributedWrites{app=jira}",
                "UnattributedWrites{app=other}"
            ]
        );
        let auth = &all[0];
        assert!(
            auth.summary
                .contains("SCIM calls to 150 other apps are refused (401/403): 150 in"),
            "{}",
            auth.summary
        );
        let details = auth.details.join("\n");
        assert!(
            details.contains("evil-000, evil-001")
                && details.contains("150 of them writes with no IdP record"),
            "{details}"
        );
        assert!(all[2]
            .summary
            .contains("150 SCIM write(s) to 150 other apps"));
    }

    #[test]
    fn unattributed_writes_and_post_disable_requests_are_alerts_of_their_own() {
        let mut w = World::new();
        w.evidence.push(Notable {
            counted: None,
            time: at(10),
            kind: NotableKind::Unattributed,
            stage: Some(Stage::Mover),
            app: "github".into(),
            cause: None,
            cid: Some("manual-1".into()),
            user: None,
            what: Some("PATCH /scim/v2/Users/9 -> 200".into()),
        });
        w.evidence.push(Notable {
            counted: None,
            time: at(20),
            kind: NotableKind::PostDisable,
            stage: None,
            app: "github".into(),
            cause: None,
            cid: Some("after-1".into()),
            user: Some("gone@corp.example".into()),
            what: Some("GET /api/repos -> 200".into()),
        });
        let all = w.eval(30);
        assert_eq!(
            keys(&all),
            [
                "PostDisableActivity{app=github}",
                "UnattributedWrites{app=github}"
            ]
        );
        assert_eq!(all[0].severity, "page");
        assert!(all[0].details.join("\n").contains("gone@corp.example"));
        assert_eq!(all[1].severity, "ticket");
        assert!(all[1].details[0].contains("PATCH /scim/v2/Users/9 -> 200 (manual-1)"));
        // The post-disable window is 10 minutes, to the second (its counts are by the minute,
        // and held it up to a minute longer with no request left to name); the unattributed
        // one an hour.
        assert!(keys(&w.eval(619)).contains(&"PostDisableActivity{app=github}".to_string()));
        assert_eq!(keys(&w.eval(621)), ["UnattributedWrites{app=github}"]);
        assert_eq!(keys(&w.eval(700)), ["UnattributedWrites{app=github}"]);
    }

    #[test]
    fn an_overdue_high_risk_leaver_pages_when_its_deadline_passes() {
        let mut w = World::new();
        for (user, high_risk) in [("root@corp.example", true), ("temp@corp.example", false)] {
            w.episodes.push(Episode {
                app: "aws-prod".into(),
                user_id: None,
                user_login: Some(user.into()),
                initiated_at: at(0),
                first_attempt_at: Some(at(5)),
                disabled_at: None,
                high_risk,
                deadline_seconds: 900,
                correlation_ids: vec!["d-1".into()],
                state: EpisodeState::Open,
                initiated_by: "deactivate".into(),
                known_as: String::new(),
                by_source: false,
                started_by: Some(crate::judge::ClockStart::Operation),
                disabled_by: None,
                decided_on: None,
            });
        }
        assert!(w.eval(900).is_empty(), "due, not yet overdue");
        let all = w.eval(901);
        assert_eq!(
            keys(&all),
            ["LeaverDisableOverdue{app=aws-prod,user=root@corp.example}"]
        );
        assert!(all[0]
            .summary
            .contains("still not disabled 15m 01s after deactivate (deadline 15m)"));
        // Known by its id when it opened: the alert keeps that name (a stable dedup key).
        w.episodes[0].known_as = "u-root".into();
        assert_eq!(
            keys(&w.eval(901)),
            ["LeaverDisableOverdue{app=aws-prod,user=u-root}"]
        );
    }

    #[test]
    fn a_silent_source_is_stale_only_once_everything_is_read_and_severities_can_be_set() {
        let mut w = World::new();
        let source = |source, last_event, stale_after_secs| Freshness {
            source,
            last_event,
            watched_since: at(0),
            stale_after_secs,
        };
        w.sources = vec![
            source("okta", Some(at(0)), 900),
            source("gateway", Some(at(1000)), 900),
            // Never stale (an HR feed, by default), and stale only after its own hour.
            source("hr", Some(at(0)), 0),
            source("audit", Some(at(0)), 3600),
        ];
        w.alerting
            .severity
            .insert("SourceStale".into(), "ticket".into());
        w.caught_up = false;
        assert!(w.eval(1000).is_empty(), "a backlog is not silence");
        w.caught_up = true;
        let all = w.eval(1000);
        assert_eq!(keys(&all), ["SourceStale{source=okta}"]);
        assert_eq!(all[0].severity, "ticket");
        assert!(all[0].summary.contains("for 17 min"), "{}", all[0].summary);
        // Under two minutes in seconds (a threshold under a minute said "0 min").
        w.sources.push(source("nginx2", Some(at(980)), 8));
        let quick = w.eval(1000);
        assert!(
            quick[1].summary.contains("for 20 s"),
            "{}",
            quick[1].summary
        );
        w.sources.pop();
        // A source with no line at all is silent since it was first watched (a glob matching
        // nothing), across restarts: not since this process started.
        w.sources.push(source("entra", None, 900));
        let all = w.eval(1000);
        assert_eq!(
            keys(&all),
            ["SourceStale{source=okta}", "SourceStale{source=entra}"]
        );
        assert!(
            all[1]
                .summary
                .contains("none since scimwatch began watching it"),
            "{}",
            all[1].summary
        );
        assert!(w.eval(800).iter().all(|c| c.labels["source"] != "entra"));
        assert_eq!(
            keys(&w.eval(3601)),
            [
                "SourceStale{source=okta}",
                "SourceStale{source=gateway}",
                "SourceStale{source=audit}",
                "SourceStale{source=entra}"
            ]
        );
    }
}
