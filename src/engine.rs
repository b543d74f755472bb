//! The core: records in, judged operations, leaver episodes and post-disable activity out.
//!
//! Synchronous, clock-free and deterministic. The driver decides what "now" is: `replay` uses
//! the newest event time (the watermark); the daemon uses `min(wall clock, watermark + allowed
//! lateness)`. Both call the same [`Engine::ingest`] / [`Engine::advance`] / [`Engine::finish`].
//!
//! Two stages of ordering:
//! 1. the join holds records until their window has passed, then judges whole operations;
//! 2. a timeline re-sorts what lifecycle logic needs (operations, triggers, requests made as a
//!    user) by event time, releasing an item only once nothing earlier can still come out of
//!    the join. That is what makes a rehire logged late still land between two leavers.

use crate::config::Config;
use crate::join::{Joined, Joiner};
use crate::judge::leavers::{LeaverEvent, LifecycleOp, Request, Trigger};
use crate::judge::policy::Subject;
use crate::judge::{judge, Episode, Episodes, Operation, Policy, PostDisableActivity};
use crate::model::{Origin, Outcome, Record, Stage};
use crate::time::Ts;
use std::collections::BTreeMap;

/// What the engine produces, in the order it is settled.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Operation(Box<Operation>),
    /// An episode that ended (disabled or cancelled), or, from `finish`, one still open.
    Episode(Episode),
    PostDisable(PostDisableActivity),
}

/// Settings of the core, from `[slo]`.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub join_window_secs: u64,
    /// How late (behind the clock) a line may arrive and still be joined as if on time.
    pub allowed_lateness_secs: u64,
    pub policy: Policy,
}

impl EngineSettings {
    pub fn from_config(config: &Config) -> EngineSettings {
        EngineSettings {
            join_window_secs: config.slo.join_window_secs,
            allowed_lateness_secs: config.slo.allowed_lateness_secs,
            policy: Policy::from_config(&config.slo),
        }
    }
}

/// Timeline order: time, then kind (triggers before operations before requests), then where
/// the item came from — all properties of the data, none of arrival order.
type TimelineKey = (Ts, u8, (u16, u32, u64));

#[derive(Debug)]
enum TimelineItem {
    Trigger(Trigger),
    Operation(LifecycleOp),
    Request(Request),
}

/// The pipeline core.
#[derive(Debug)]
pub struct Engine {
    joiner: Joiner,
    lateness_micros: i64,
    episodes: Episodes,
    timeline: BTreeMap<TimelineKey, TimelineItem>,
    watermark: Option<Ts>,
    clock: Ts,
    outputs: Vec<Output>,
    joined: Vec<Joined>,
    leaver_events: Vec<LeaverEvent>,
}

fn origin_key(origin: Origin) -> (u16, u32, u64) {
    (origin.source, origin.file, origin.line)
}

impl Engine {
    pub fn new(settings: EngineSettings) -> Engine {
        Engine {
            joiner: Joiner::new(settings.join_window_secs),
            lateness_micros: (settings.allowed_lateness_secs as i64)
                .saturating_mul(crate::time::MICROS_PER_SEC),
            episodes: Episodes::new(settings.policy),
            timeline: BTreeMap::new(),
            watermark: None,
            clock: Ts(i64::MIN),
            outputs: Vec::new(),
            joined: Vec::new(),
            leaver_events: Vec::new(),
        }
    }

    /// The largest event time seen (`as_of` unless overridden).
    pub fn watermark(&self) -> Option<Ts> {
        self.watermark
    }

    /// Keys waiting for their join window.
    pub fn join_pending(&self) -> usize {
        self.joiner.pending()
    }

    /// Leaver episodes not yet disabled.
    pub fn open_episodes(&self) -> Vec<&Episode> {
        self.episodes.open_episodes()
    }

    /// Takes one parsed record. Nothing is settled until [`Engine::advance`].
    pub fn ingest(&mut self, record: Record) {
        let time = record.time();
        self.watermark = Some(self.watermark.map_or(time, |w| w.max(time)));
        match record {
            Record::Idp(idp) => self.joiner.push_idp(idp),
            Record::Gateway(gateway) => {
                if let Some(principal) = &gateway.principal {
                    // Checked one window later on the timeline: by then every operation whose
                    // disable answered before this request has been placed (its IdP record
                    // can trail its answer by up to a window).
                    let shifted = Ts(gateway.time.0.saturating_add(self.joiner.window_micros()));
                    self.timeline.insert(
                        (shifted, 2, origin_key(gateway.origin)),
                        TimelineItem::Request(Request {
                            time: gateway.time,
                            principal: principal.clone(),
                            app: gateway.app.clone(),
                            correlation_id: gateway.correlation_id.clone(),
                            method: gateway.method.as_str(),
                            path: gateway.path.clone(),
                            status: gateway.status,
                        }),
                    );
                }
                // Only SCIM writes are attempts (clarification 4); reads never join.
                if gateway.write.is_some() {
                    self.joiner.push_gateway(gateway);
                }
            }
            Record::Trigger(trigger) => {
                self.timeline.insert(
                    (trigger.time, 0, origin_key(trigger.origin)),
                    TimelineItem::Trigger(Trigger {
                        time: trigger.time,
                        app: trigger.app,
                        user_id: trigger.user_id,
                        user_login: trigger.user_login,
                        event: trigger.event,
                        groups: trigger.groups,
                    }),
                );
            }
            Record::Ignored(_) => {}
        }
    }

    /// Moves the engine's clock to `clock` (never backwards) and settles what it can: a key
    /// expires once the clock is a window plus the allowed lateness past its newest record, so
    /// a line up to `allowed_lateness_secs` late is still joined exactly as if it were on time.
    pub fn advance(&mut self, clock: Ts) {
        if clock > self.clock {
            self.clock = clock;
        }
        let settled_until = Ts(self.clock.0.saturating_sub(self.lateness_micros));
        let mut joined = std::mem::take(&mut self.joined);
        self.joiner.expire(settled_until, &mut joined);
        self.settle_joined(&mut joined);
        self.joined = joined;
        let window = self.joiner.window_micros();
        let mut floor = Ts(settled_until.0.saturating_sub(window));
        if let Some(pending) = self.joiner.pending_floor() {
            floor = floor.min(pending);
        }
        self.release_timeline(Some(floor));
    }

    /// Settles everything as if every window had passed (end of replay input), then reports
    /// the episodes still open as of `as_of`.
    pub fn finish(&mut self) {
        let mut joined = std::mem::take(&mut self.joined);
        self.joiner.expire_all(&mut joined);
        self.settle_joined(&mut joined);
        self.release_timeline(None);
        for episode in self.episodes.open_episodes() {
            self.outputs.push(Output::Episode(episode.clone()));
        }
    }

    /// Takes what has been settled so far.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.outputs.drain(..)
    }

    fn settle_joined(&mut self, joined: &mut Vec<Joined>) {
        for one in joined.drain(..) {
            let origin = one.idp.first().map(|r| r.origin).unwrap_or_default();
            let mut operation = judge(one);
            let (high_risk, _) = self.episodes.policy().decide(Subject {
                app: operation.app.as_deref(),
                user_login: operation.user_login.as_deref(),
                user_id: operation.user_id.as_deref(),
                groups: &operation.groups,
            });
            operation.high_risk = high_risk;
            let lifecycle = matches!(operation.stage, Stage::Joiner | Stage::Leaver)
                && !matches!(operation.outcome, Outcome::Unattributed | Outcome::Skipped);
            if lifecycle {
                self.timeline.insert(
                    (operation.time, 1, origin_key(origin)),
                    TimelineItem::Operation(LifecycleOp {
                        stage: operation.stage,
                        outcome: operation.outcome,
                        time: operation.time,
                        app: operation.app.clone(),
                        user_id: operation.user_id.clone(),
                        user_login: operation.user_login.clone(),
                        action: operation.action.clone().unwrap_or_default(),
                        correlation_id: operation.correlation_id.clone(),
                        trigger_time: operation.trigger_time,
                        first_attempt_time: operation.first_attempt_time,
                        first_success: operation.first_success(),
                        groups: operation.groups.clone(),
                    }),
                );
            }
            self.outputs.push(Output::Operation(Box::new(operation)));
        }
    }

    fn release_timeline(&mut self, floor: Option<Ts>) {
        while let Some(entry) = self.timeline.first_entry() {
            if floor.is_some_and(|floor| entry.key().0 >= floor) {
                break;
            }
            let item = entry.remove();
            match item {
                TimelineItem::Trigger(trigger) => self.episodes.on_trigger(&trigger),
                TimelineItem::Operation(op) => {
                    self.episodes.on_operation(&op, &mut self.leaver_events)
                }
                TimelineItem::Request(request) => {
                    self.episodes.on_request(&request, &mut self.leaver_events)
                }
            }
            for event in self.leaver_events.drain(..) {
                self.outputs.push(match event {
                    LeaverEvent::Ended(episode) => Output::Episode(episode),
                    LeaverEvent::PostDisable(activity) => Output::PostDisable(activity),
                });
            }
        }
    }
}
