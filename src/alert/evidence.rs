//! What pages quote and the security alerts count: the recent failures, unattributed writes
//! and requests made as disabled users, by event time, each kind in its own bounded store
//! (oldest dropped first: a storm of 429s cannot push out a post-disable request), plus exact
//! per-minute counts per app of what the alerts are judged on. Checkpointed with the engine,
//! so a page after a restart still carries its correlation IDs.

use crate::judge::{Operation, PostDisableActivity};
use crate::model::{Cause, Outcome, Stage};
use crate::time::Ts;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Events kept at most per kind, whatever the windows: a storm cannot grow memory.
pub const CAPACITY: usize = 20_000;

const MINUTE: i64 = 60 * crate::time::MICROS_PER_SEC;

/// app → minute → count.
type Counts = BTreeMap<String, BTreeMap<i64, u64>>;

/// Apps counted on their own per kind; the rest are counted as `other`. What only the gateway
/// says names the app, maybe from a client's `Host` header: 200,000 made-up names made a
/// 20 MB checkpoint and 246 MB of memory (helper-43's review). Far more than the alerts name
/// one by one (`MAX_GATEWAY_APPS`), so the busiest still get theirs.
pub const MAX_COUNTED_APPS: usize = 1_000;

fn bump(counts: &mut Counts, app: &str, time: Ts) {
    let app = if counts.len() >= MAX_COUNTED_APPS && !counts.contains_key(app) {
        "other"
    } else {
        app
    };
    *counts
        .entry(app.to_string())
        .or_default()
        .entry(time.0.div_euclid(MINUTE))
        .or_default() += 1;
}

/// Causes by count, most frequent first (ties in the causes' order).
fn ranked(counts: BTreeMap<Cause, u64>) -> Vec<(Cause, u64)> {
    let mut ranked: Vec<(Cause, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

/// Per app, the count over the whole minutes from `since`'s minute on.
fn totals(counts: &Counts, since: Ts) -> BTreeMap<String, u64> {
    let first = since.0.div_euclid(MINUTE);
    counts
        .iter()
        .map(|(app, minutes)| (app.clone(), minutes.range(first..).map(|(_, n)| n).sum()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotableKind {
    /// A failed or unconfirmed operation.
    Failure,
    /// A gateway write with no IdP record.
    Unattributed,
    /// A request made as a user after their leaver episode closed.
    PostDisable,
}

/// One event worth quoting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notable {
    pub time: Ts,
    pub kind: NotableKind,
    pub stage: Option<Stage>,
    pub app: String,
    pub cause: Option<Cause>,
    pub cid: Option<String>,
    pub user: Option<String>,
    /// `METHOD path -> status` of the request, where it matters.
    pub what: Option<String>,
    /// Where it is counted in the windows, when later than its time
    /// ([`Evidence::record_operation`]): its quotes are chosen by the windows its count is in
    /// (counted late and quoted by its time, a stolen token's 401s paged without the line
    /// that says so: helper-50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<Ts>,
}

impl Notable {
    /// Where it is counted in the windows.
    pub fn counted_at(&self) -> Ts {
        self.counted.unwrap_or(self.time).max(self.time)
    }

    fn counted_since(&self, since: Ts) -> bool {
        self.counted_at() >= since
    }
}

/// Where the counts since `since` begin: the start of its minute, as [`totals`] counts whole
/// minutes. Quotes chosen from there match a count: a page's count reaches back up to a
/// minute before its window, and from the window's exact start the refusals it counted
/// were left out of its quotes (helper-50).
pub fn counts_from(since: Ts) -> Ts {
    Ts(since.0.saturating_sub(since.0.rem_euclid(MINUTE)))
}

/// Recent notable events per kind, oldest first (by arrival, which is close to event time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    failures: VecDeque<Notable>,
    unattributed: VecDeque<Notable>,
    post_disable: VecDeque<Notable>,
    auth_failure_counts: Counts,
    unattributed_counts: Counts,
    post_disable_counts: Counts,
}

impl Evidence {
    /// Gives the quoted events and the per-app counts their apps' names under the config now
    /// (`[apps] aliases` changed across a restart): a burst of 401s that spans the restart
    /// counts as one app's (helper-63). How many names changed.
    pub fn rename_apps(&mut self, rename: crate::model::Rename<'_>) -> usize {
        let mut renamed = 0;
        for store in [
            &mut self.failures,
            &mut self.unattributed,
            &mut self.post_disable,
        ] {
            for event in store.iter_mut() {
                renamed += usize::from(crate::model::rename_app(&mut event.app, rename));
            }
        }
        for counts in [
            &mut self.auth_failure_counts,
            &mut self.unattributed_counts,
            &mut self.post_disable_counts,
        ] {
            for (app, minutes) in std::mem::take(counts) {
                let app = match rename(&app) {
                    Some(new) => {
                        renamed += 1;
                        new
                    }
                    None => app,
                };
                let merged = counts.entry(app).or_default();
                for (minute, n) in minutes {
                    *merged.entry(minute).or_default() += n;
                }
            }
        }
        renamed
    }

    fn store(&self, kind: NotableKind) -> &VecDeque<Notable> {
        match kind {
            NotableKind::Failure => &self.failures,
            NotableKind::Unattributed => &self.unattributed,
            NotableKind::PostDisable => &self.post_disable,
        }
    }

    pub(crate) fn push(&mut self, event: Notable) {
        self.push_counted_at(event, None)
    }

    /// [`Evidence::push`], counted in the windows no earlier than `judged`: where they ended
    /// when it was judged. A write without a correlation ID waits three join windows in the
    /// join's pool, and counted at its own time it was older than the 15-minute auth-failure
    /// window's start by then: a stolen token's 401s never paged ScimAuthFailures
    /// (helper-46). Its quote keeps its own time.
    fn push_counted_at(&mut self, mut event: Notable, judged: Option<Ts>) {
        event.counted = judged.filter(|judged| *judged > event.time);
        let at = event.counted_at();
        if event.kind != NotableKind::PostDisable && Self::is_auth_failure(&event) {
            bump(&mut self.auth_failure_counts, &event.app, at)
        }
        match event.kind {
            NotableKind::Failure => {}
            NotableKind::Unattributed => bump(&mut self.unattributed_counts, &event.app, at),
            NotableKind::PostDisable => bump(&mut self.post_disable_counts, &event.app, at),
        }
        let store = match event.kind {
            NotableKind::Failure => &mut self.failures,
            NotableKind::Unattributed => &mut self.unattributed,
            NotableKind::PostDisable => &mut self.post_disable,
        };
        if store.len() >= CAPACITY {
            store.pop_front();
        }
        store.push_back(event);
    }

    /// Keeps what a judged operation contributes (failures and unattributed writes), counted
    /// no earlier than `judged`, where the windows ended when it was judged.
    pub fn record_operation(&mut self, op: &Operation, judged: Option<Ts>) {
        let kind = match op.outcome {
            Outcome::Failed | Outcome::Unconfirmed => NotableKind::Failure,
            Outcome::Unattributed => NotableKind::Unattributed,
            Outcome::Succeeded | Outcome::Skipped => return,
        };
        self.push_counted_at(
            Notable {
                counted: None,
                time: op.time,
                kind,
                stage: Some(op.stage),
                app: op.app.clone().unwrap_or_else(|| "unknown".into()),
                cause: op.alert_cause(),
                cid: op.correlation_id.clone(),
                user: op.user().map(str::to_string),
                what: match (&op.method, &op.path, op.http_status) {
                    (Some(method), Some(path), Some(status)) => {
                        Some(format!("{} {path} -> {status}", method.as_str()))
                    }
                    _ => None,
                },
            },
            judged,
        );
    }

    pub fn record_post_disable(&mut self, activity: &PostDisableActivity) {
        self.push(Notable {
            counted: None,
            time: activity.time,
            kind: NotableKind::PostDisable,
            stage: None,
            app: activity.app.clone(),
            cause: None,
            cid: activity.correlation_id.clone(),
            user: Some(activity.user.clone()),
            what: Some(format!(
                "{} {} -> {}",
                activity.method, activity.path, activity.status
            )),
        });
    }

    /// Drops events (and counts) older than `keep_secs` before `now`.
    /// Forgets events older than `keep_secs` before `now`, and counts older than
    /// `counts_keep_secs` (only the security alerts' windows read them).
    pub fn prune(&mut self, now: Ts, keep_secs: u64, counts_keep_secs: u64) {
        let oldest = now.minus_secs(keep_secs);
        for store in [
            &mut self.failures,
            &mut self.unattributed,
            &mut self.post_disable,
        ] {
            store.retain(|e| e.counted_at() >= oldest);
        }
        let first = now.minus_secs(counts_keep_secs).0.div_euclid(MINUTE);
        for counts in [
            &mut self.auth_failure_counts,
            &mut self.unattributed_counts,
            &mut self.post_disable_counts,
        ] {
            for minutes in counts.values_mut() {
                minutes.retain(|minute, _| *minute >= first);
            }
            counts.retain(|_, minutes| !minutes.is_empty());
        }
    }

    pub fn len(&self) -> usize {
        self.failures.len() + self.unattributed.len() + self.post_disable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The events of a kind in the windows since `since`: failures by their time, as the stage
    /// windows count operations; the rest where they are counted.
    fn since(&self, kind: NotableKind, since: Ts) -> impl Iterator<Item = &Notable> {
        self.store(kind).iter().filter(move |e| match kind {
            NotableKind::Failure => e.time >= since,
            _ => e.counted_since(since),
        })
    }

    /// Failure causes (of a stage and/or app) since `since`, most frequent first.
    pub fn top_causes(
        &self,
        stage: Option<Stage>,
        app: Option<&str>,
        since: Ts,
    ) -> Vec<(Cause, u64)> {
        let mut counts: BTreeMap<Cause, u64> = BTreeMap::new();
        for e in self.since(NotableKind::Failure, since) {
            if stage.is_some_and(|s| e.stage != Some(s)) || app.is_some_and(|a| e.app != a) {
                continue;
            }
            if let Some(cause) = e.cause {
                *counts.entry(cause).or_default() += 1;
            }
        }
        ranked(counts)
    }

    /// The newest failed correlation IDs (of a stage and/or app), newest first.
    pub fn sample_failures(
        &self,
        stage: Option<Stage>,
        app: Option<&str>,
        since: Ts,
        n: usize,
    ) -> Vec<String> {
        self.failures
            .iter()
            .rev()
            .filter(|e| e.time >= since)
            .filter(|e| stage.is_none_or(|s| e.stage == Some(s)))
            .filter(|e| app.is_none_or(|a| e.app == a))
            .filter_map(|e| e.cid.clone())
            .take(n)
            .collect()
    }

    /// The failures whose correlation ID is one of `wanted`, indexed by it, so that many
    /// episodes' causes cost one pass over the store ([`CausesById::causes_of`]). A lookup per
    /// episode through the store was a string comparison per failure and ID: with a thousand
    /// overdue leavers and a full store, most of a busy daemon's time.
    pub fn causes_by_id<'a>(&'a self, wanted: &HashSet<&str>) -> CausesById<'a> {
        let mut by_id: HashMap<&'a str, Vec<(Ts, Cause)>> = HashMap::new();
        if !wanted.is_empty() {
            for e in &self.failures {
                if let (Some(cause), Some(cid)) = (e.cause, e.cid.as_deref()) {
                    if wanted.contains(cid) {
                        by_id.entry(cid).or_default().push((e.time, cause));
                    }
                }
            }
        }
        CausesById { by_id }
    }

    fn is_auth_failure(e: &Notable) -> bool {
        matches!(e.cause, Some(Cause::Unauthorized | Cause::Forbidden))
    }

    /// 401/403 answers per app since `since` (exact, in whole minutes): failed operations,
    /// and unattributed writes (no IdP record) refused so.
    pub fn auth_failures_by_app(&self, since: Ts) -> BTreeMap<String, u64> {
        totals(&self.auth_failure_counts, since)
    }

    /// The newest 401/403 correlation IDs of an app (operations and unattributed writes).
    pub fn sample_auth_failures(&self, app: &str, since: Ts, n: usize) -> Vec<String> {
        let mut refused: Vec<&Notable> = self
            .failures
            .iter()
            .chain(&self.unattributed)
            .filter(|e| e.counted_since(since) && e.app == app)
            .filter(|e| Self::is_auth_failure(e))
            .collect();
        refused.sort_by_key(|e| std::cmp::Reverse(e.counted_at()));
        refused
            .into_iter()
            .filter_map(|e| e.cid.clone())
            .take(n)
            .collect()
    }

    /// Of an app's 401/403 answers since `since`, those to unattributed writes (among the
    /// events kept).
    pub fn unattributed_auth_failures(&self, app: &str, since: Ts) -> usize {
        self.since(NotableKind::Unattributed, since)
            .filter(|e| e.app == app && Self::is_auth_failure(e))
            .count()
    }

    /// Unattributed writes per app since `since`: (app, newest samples, exact count).
    pub fn unattributed_by_app(&self, since: Ts, n: usize) -> Vec<(String, Vec<String>, u64)> {
        let mut by_app: BTreeMap<String, (Vec<String>, u64)> =
            totals(&self.unattributed_counts, since)
                .into_iter()
                .map(|(app, count)| (app, (Vec::new(), count)))
                .collect();
        for e in self.unattributed.iter().rev() {
            if !e.counted_since(since) {
                continue;
            }
            let Some(entry) = by_app.get_mut(&e.app) else {
                continue;
            };
            if entry.0.len() < n {
                entry.0.push(format!(
                    "{} {} ({})",
                    e.time,
                    e.what.as_deref().unwrap_or("write"),
                    e.cid.as_deref().unwrap_or("-")
                ));
            }
        }
        by_app
            .into_iter()
            .map(|(app, (samples, count))| (app, samples, count))
            .collect()
    }

    /// Requests made as disabled users since `since`, per app: (exact count, the requests
    /// still kept, oldest first).
    pub fn post_disable_by_app(&self, since: Ts) -> BTreeMap<String, (u64, Vec<&Notable>)> {
        let mut by_app: BTreeMap<String, (u64, Vec<&Notable>)> =
            totals(&self.post_disable_counts, since)
                .into_iter()
                .map(|(app, count)| (app, (count, Vec::new())))
                .collect();
        for e in self.since(NotableKind::PostDisable, since) {
            // An app past the counted ones is counted as `other`, and its requests go there
            // too (with none, `other` never paged: helper-46).
            let app = match by_app.contains_key(&e.app) {
                true => e.app.as_str(),
                false => "other",
            };
            if let Some(entry) = by_app.get_mut(app) {
                entry.1.push(e);
            }
        }
        by_app
    }
}

/// Failure causes by correlation ID ([`Evidence::causes_by_id`]).
pub struct CausesById<'a> {
    by_id: HashMap<&'a str, Vec<(Ts, Cause)>>,
}

impl CausesById<'_> {
    /// Causes of the failures among `cids` since `since`, most frequent first.
    pub fn causes_of(&self, cids: &[String], since: Ts) -> Vec<(Cause, u64)> {
        let mut ids: Vec<&str> = cids.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut counts: BTreeMap<Cause, u64> = BTreeMap::new();
        for failures in ids.iter().filter_map(|id| self.by_id.get(id)) {
            for (time, cause) in failures {
                if *time >= since {
                    *counts.entry(*cause).or_default() += 1;
                }
            }
        }
        ranked(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: NotableKind, cause: Option<Cause>, secs: i64) -> Notable {
        Notable {
            counted: None,
            time: Ts::from_secs(1_782_892_800 + secs),
            kind,
            stage: Some(Stage::Leaver),
            app: "okta".into(),
            cause,
            cid: Some(format!("c{secs}")),
            user: Some("u@corp.example".into()),
            what: None,
        }
    }

    /// 401s under an app's old spelling and its new name, across a restart that added the
    /// alias, count as one app's (helper-63: split, neither reached the threshold).
    #[test]
    fn renamed_apps_count_as_one() {
        let mut evidence = Evidence::default();
        for (i, app) in ["AWS Production", "AWS Production", "aws-prod"]
            .iter()
            .enumerate()
        {
            evidence.push(Notable {
                app: app.to_string(),
                ..event(NotableKind::Failure, Some(Cause::Unauthorized), i as i64)
            });
        }
        let since = Ts::from_secs(1_782_892_800);
        assert_eq!(evidence.auth_failures_by_app(since).len(), 2);
        let rename = |app: &str| (app == "AWS Production").then(|| "aws-prod".to_string());
        assert_eq!(evidence.rename_apps(&rename), 3);
        let counted = evidence.auth_failures_by_app(since);
        assert_eq!(
            counted.into_iter().collect::<Vec<_>>(),
            [("aws-prod".to_string(), 3)]
        );
        assert_eq!(evidence.sample_auth_failures("aws-prod", since, 5).len(), 3);
        assert_eq!(evidence.rename_apps(&rename), 0, "once");
    }

    #[test]
    fn a_storm_of_failures_neither_grows_memory_nor_pushes_out_security_evidence() {
        let mut evidence = Evidence::default();
        evidence.push(event(NotableKind::PostDisable, None, 0));
        for i in 0..30 {
            evidence.push(event(NotableKind::Failure, Some(Cause::Unauthorized), i));
        }
        for i in 0..(CAPACITY as i64 + 5_000) {
            evidence.push(event(
                NotableKind::Failure,
                Some(Cause::RateLimited),
                60 + i % 60,
            ));
        }
        assert_eq!(evidence.failures.len(), CAPACITY);
        let since = Ts::from_secs(1_782_892_800);
        assert_eq!(evidence.post_disable_by_app(since)["okta"].0, 1);
        // The 401s were pushed out of the quotes, not out of the count.
        assert_eq!(evidence.auth_failures_by_app(since)["okta"], 30);
        let saved = serde_json::to_string(&evidence).unwrap();
        let restored: Evidence = serde_json::from_str(&saved).unwrap();
        assert_eq!(restored, evidence);
        let mut pruned = evidence.clone();
        pruned.prune(Ts::from_secs(1_782_892_800 + 3600), 600, 600);
        assert!(pruned.is_empty() && pruned.auth_failures_by_app(since).is_empty());
    }

    /// Unattributed 401s under many made-up app names are counted under at most
    /// `MAX_COUNTED_APPS` names and `other`, and the counts are kept only as long as the
    /// security alerts read them, however long the events are kept.
    #[test]
    fn counts_are_bounded_by_app_and_kept_for_their_windows() {
        let mut evidence = Evidence::default();
        for i in 0..(MAX_COUNTED_APPS + 500) {
            let mut e = event(NotableKind::Unattributed, Some(Cause::Unauthorized), 0);
            e.app = format!("host-{i}.example");
            evidence.push(e);
        }
        let since = Ts::from_secs(1_782_892_800);
        let by_app = evidence.auth_failures_by_app(since);
        assert_eq!(by_app.len(), MAX_COUNTED_APPS + 1);
        assert_eq!(by_app["other"], 500);
        assert_eq!(by_app.values().sum::<u64>(), MAX_COUNTED_APPS as u64 + 500);
        // Requests as disabled users past the counted apps go with `other`'s count, which
        // pages only with requests to show (helper-46).
        for i in 0..(MAX_COUNTED_APPS + 2) {
            let mut e = event(NotableKind::PostDisable, None, 0);
            e.app = format!("app-{i}");
            evidence.push(e);
        }
        let by_app = evidence.post_disable_by_app(since);
        assert_eq!(by_app["other"].0, 2);
        assert_eq!(by_app["other"].1.len(), 2);
        let mut pruned = evidence.clone();
        pruned.prune(Ts::from_secs(1_782_892_800 + 1_800), 3 * 86_400, 900);
        assert!(pruned.auth_failures_by_app(since).is_empty());
        assert_eq!(pruned.unattributed.len(), evidence.unattributed.len());
    }

    #[test]
    fn causes_by_id_counts_each_failure_of_an_episode_once_from_its_start() {
        let mut evidence = Evidence::default();
        let mut failure = |secs: i64, cid: &str, cause: Cause| {
            let mut e = event(NotableKind::Failure, Some(cause), secs);
            e.cid = Some(cid.into());
            evidence.push(e);
        };
        failure(0, "a", Cause::Unauthorized); // before the episode's start
        failure(10, "a", Cause::RateLimited);
        failure(11, "a", Cause::RateLimited);
        failure(12, "b", Cause::ServerError);
        failure(13, "c", Cause::RateLimited); // another episode's
        let mut no_cause = event(NotableKind::Failure, None, 14);
        no_cause.cid = Some("a".into());
        evidence.push(no_cause);
        let wanted: HashSet<&str> = ["a", "b", "z"].into_iter().collect();
        let index = evidence.causes_by_id(&wanted);
        let since = Ts::from_secs(1_782_892_800 + 5);
        // "a" twice in the episode's list counts its failures once, as the old scan did.
        let ids = ["a".to_string(), "b".to_string(), "a".to_string()];
        assert_eq!(
            index.causes_of(&ids, since),
            [(Cause::RateLimited, 2), (Cause::ServerError, 1)]
        );
        assert_eq!(
            index.causes_of(&["a".to_string()], Ts::from_secs(1_782_892_800)),
            [(Cause::RateLimited, 2), (Cause::Unauthorized, 1)]
        );
        // Only the wanted IDs are indexed, and nothing when none is wanted.
        assert!(index.causes_of(&["c".to_string()], since).is_empty());
        assert!(evidence
            .causes_by_id(&HashSet::new())
            .causes_of(&ids, since)
            .is_empty());
    }
}
