//! What pages quote: the recent failures, unattributed writes and requests made as disabled
//! users, by event time. Bounded (oldest dropped first) and checkpointed with the engine, so
//! a page after a restart still carries its correlation IDs.

use crate::judge::{Operation, PostDisableActivity};
use crate::model::{Cause, Outcome, Stage};
use crate::time::Ts;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Events kept at most, whatever the windows: a storm of failures cannot grow memory.
pub const CAPACITY: usize = 20_000;

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
}

/// Recent notable events, oldest first (by arrival, which is close to event time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    events: VecDeque<Notable>,
}

impl Evidence {
    pub(crate) fn push(&mut self, event: Notable) {
        if self.events.len() >= CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Keeps what a judged operation contributes (failures and unattributed writes).
    pub fn record_operation(&mut self, op: &Operation) {
        let kind = match op.outcome {
            Outcome::Failed | Outcome::Unconfirmed => NotableKind::Failure,
            Outcome::Unattributed => NotableKind::Unattributed,
            Outcome::Succeeded | Outcome::Skipped => return,
        };
        self.push(Notable {
            time: op.time,
            kind,
            stage: Some(op.stage),
            app: op.app.clone().unwrap_or_else(|| "unknown".into()),
            cause: op.cause,
            cid: op.correlation_id.clone(),
            user: op.user().map(str::to_string),
            what: match (&op.method, &op.path, op.http_status) {
                (Some(method), Some(path), Some(status)) => {
                    Some(format!("{} {path} -> {status}", method.as_str()))
                }
                _ => None,
            },
        });
    }

    pub fn record_post_disable(&mut self, activity: &PostDisableActivity) {
        self.push(Notable {
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

    /// Drops events older than `keep_secs` before `now`.
    pub fn prune(&mut self, now: Ts, keep_secs: u64) {
        let oldest = now.minus_secs(keep_secs);
        self.events.retain(|e| e.time >= oldest);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn since(&self, kind: NotableKind, since: Ts) -> impl Iterator<Item = &Notable> {
        self.events
            .iter()
            .filter(move |e| e.kind == kind && e.time >= since)
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
        let mut ranked: Vec<(Cause, u64)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }

    /// The newest failed correlation IDs (of a stage and/or app), newest first.
    pub fn sample_failures(
        &self,
        stage: Option<Stage>,
        app: Option<&str>,
        since: Ts,
        n: usize,
    ) -> Vec<String> {
        self.events
            .iter()
            .rev()
            .filter(|e| e.kind == NotableKind::Failure && e.time >= since)
            .filter(|e| stage.is_none_or(|s| e.stage == Some(s)))
            .filter(|e| app.is_none_or(|a| e.app == a))
            .filter_map(|e| e.cid.clone())
            .take(n)
            .collect()
    }

    /// Causes of the failures among `cids` since `since`, most frequent first.
    pub fn causes_of(&self, cids: &[String], since: Ts) -> Vec<(Cause, u64)> {
        let mut counts: BTreeMap<Cause, u64> = BTreeMap::new();
        for e in self.since(NotableKind::Failure, since) {
            if let (Some(cause), Some(cid)) = (e.cause, &e.cid) {
                if cids.contains(cid) {
                    *counts.entry(cause).or_default() += 1;
                }
            }
        }
        let mut ranked: Vec<(Cause, u64)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }

    fn is_auth_failure(e: &Notable) -> bool {
        matches!(e.cause, Some(Cause::Unauthorized | Cause::Forbidden))
    }

    /// 401/403 failures per app since `since`.
    pub fn auth_failures_by_app(&self, since: Ts) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for e in self.since(NotableKind::Failure, since) {
            if Self::is_auth_failure(e) {
                *counts.entry(e.app.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// The newest 401/403 correlation IDs of an app.
    pub fn sample_auth_failures(&self, app: &str, since: Ts, n: usize) -> Vec<String> {
        self.events
            .iter()
            .rev()
            .filter(|e| e.kind == NotableKind::Failure && e.time >= since && e.app == app)
            .filter(|e| Self::is_auth_failure(e))
            .filter_map(|e| e.cid.clone())
            .take(n)
            .collect()
    }

    /// Unattributed writes per app since `since`: (app, newest samples, count).
    pub fn unattributed_by_app(&self, since: Ts, n: usize) -> Vec<(String, Vec<String>, u64)> {
        let mut by_app: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
        for e in self.events.iter().rev() {
            if e.kind != NotableKind::Unattributed || e.time < since {
                continue;
            }
            let entry = by_app.entry(e.app.clone()).or_default();
            entry.1 += 1;
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

    /// Requests made as disabled users since `since`, per app, oldest first.
    pub fn post_disable_by_app(&self, since: Ts) -> BTreeMap<String, Vec<&Notable>> {
        let mut by_app: BTreeMap<String, Vec<&Notable>> = BTreeMap::new();
        for e in self.since(NotableKind::PostDisable, since) {
            by_app.entry(e.app.clone()).or_default().push(e);
        }
        by_app
    }
}
