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
//!    the join. That is what makes a rehire logged late still land between two leavers. A
//!    disabling operation goes back on it as a closure at its 2xx's time, so the first 2xx
//!    closes the episode whichever operation was logged first.

use crate::config::Config;
use crate::join::{Joined, Joiner};
use crate::judge::leavers::{LeaverEvent, LifecycleOp, Request, Trigger};
use crate::judge::policy::Subject;
use crate::judge::{judge, Episode, Episodes, Operation, Policy, PostDisableActivity};
use crate::model::{IdpRecord, Origin, Outcome, Record, Stage};
use crate::queue::{prefetch, MinQueue};
use crate::time::Ts;

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
    /// Whether gateway correlation IDs are join keys: true when an IdP source maps one.
    pub gateway_cid_joins: bool,
    pub policy: Policy,
}

impl EngineSettings {
    pub fn from_config(config: &Config) -> EngineSettings {
        EngineSettings {
            join_window_secs: config.slo.join_window_secs,
            allowed_lateness_secs: config.slo.allowed_lateness_secs,
            gateway_cid_joins: config.sources.iter().any(|source| {
                source.role == crate::config::Role::Idp
                    && crate::parse::resolve_source(source, &config.apps)
                        .is_ok_and(|parser| parser.maps(crate::parse::Field::CorrelationId))
            }),
            policy: Policy::from_config(&config.slo),
        }
    }
}

/// How a source read an action before a restart and reads it now
/// ([`EngineState::restage`]).
pub type Reads = (crate::parse::Classified, crate::parse::Classified);

/// Timeline order: time, then kind (triggers before operations before closures before
/// requests), then where the item came from — all properties of the data, none of arrival
/// order.
type TimelineKey = (Ts, u8, (u16, u32, u64));

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum TimelineItem {
    Trigger(Trigger),
    Operation(LifecycleOp),
    Request(Request),
    /// A leaver operation whose 2xx disables its episode, at the 2xx's time.
    Close(LifecycleOp),
}

impl TimelineItem {
    fn prefetch(&self) {
        match self {
            TimelineItem::Trigger(_) => {}
            TimelineItem::Operation(op) | TimelineItem::Close(op) => op.prefetch(),
            TimelineItem::Request(request) => request.prefetch(),
        }
    }
}

/// An item on the timeline, ordered by its key alone (keys are unique: kind and origin).
#[derive(Debug)]
struct Timed(TimelineKey, TimelineItem);

impl PartialEq for Timed {
    fn eq(&self, other: &Timed) -> bool {
        self.0 == other.0
    }
}

impl Eq for Timed {}

impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Timed) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timed {
    fn cmp(&self, other: &Timed) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// The timeline lane (and key kind) of triggers and returns at the source of truth.
const SOURCE_EVENTS: u8 = 0;

/// The timeline lane (and key kind) of judged operations.
const OPERATIONS: u8 = 1;

/// The key kind of disables at their 2xx's time: after the operations of the same instant,
/// before its requests (a request at the instant of the disable is after it). They wait in
/// the operations' lane (few at a time, out of its order: in its heap), so that taking an
/// item compares three lanes, not four.
const CLOSURES: u8 = 2;

/// The key kind of requests made as a user, a window after their time (checkpoints from
/// before closures had them as 2: they still sort by time first).
const REQUESTS: u8 = 3;

/// The lanes: source events, operations and closures, requests.
const REQUEST_LANE: usize = 2;

/// The timeline, one queue per kind (closures with the operations): each kind arrives nearly
/// in time order (requests a window late, operations as their joins settle), so each queue is
/// mostly a sorted run; together they release in key order.
#[derive(Debug, Default)]
struct Timeline([MinQueue<Timed>; 3]);

impl Timeline {
    fn push(&mut self, key: TimelineKey, item: TimelineItem) {
        let lane = match item {
            TimelineItem::Trigger(_) => usize::from(SOURCE_EVENTS),
            TimelineItem::Operation(_) | TimelineItem::Close(_) => usize::from(OPERATIONS),
            TimelineItem::Request(_) => REQUEST_LANE,
        };
        self.0[lane].push(Timed(key, item));
    }

    /// Takes the first item if its time is before `floor` (any first item without a floor).
    fn pop_before(&mut self, floor: Option<Ts>) -> Option<Timed> {
        let lane = (0..self.0.len())
            .filter_map(|lane| self.0[lane].peek().map(|first| (&first.0, lane)))
            .min()?
            .1;
        let first = self.0[lane].peek()?;
        if floor.is_some_and(|floor| first.0 .0 >= floor) {
            return None;
        }
        // An item waits a window or more here: by the time it comes out, it and its text
        // have long left the cache. Ask for the item eight places behind it in the same lane,
        // and for the text of the one four places behind (whose item was asked for earlier).
        if let Some(later) = self.0[lane].ahead(8) {
            prefetch(later);
        }
        if let Some(Timed(_, later)) = self.0[lane].ahead(4) {
            later.prefetch();
        }
        self.0[lane].pop()
    }

    /// Every item in key order, borrowed (for a checkpoint).
    fn sorted(&self) -> Vec<(&TimelineKey, &TimelineItem)> {
        let mut all: Vec<_> = self
            .0
            .iter()
            .flat_map(MinQueue::iter)
            .map(|Timed(key, item)| (key, item))
            .collect();
        all.sort_unstable_by_key(|(key, _)| *key);
        all
    }
}

impl FromIterator<(TimelineKey, TimelineItem)> for Timeline {
    fn from_iter<I: IntoIterator<Item = (TimelineKey, TimelineItem)>>(items: I) -> Timeline {
        let mut timeline = Timeline::default();
        for (key, item) in items {
            timeline.push(key, item);
        }
        timeline
    }
}

/// Everything the engine holds, for a checkpoint: restoring it and re-reading the lines after
/// the checkpointed offsets gives exactly the outputs an uninterrupted run would have.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EngineState {
    joiner: crate::join::JoinerState,
    episodes: crate::judge::leavers::EpisodesState,
    timeline: Vec<(TimelineKey, TimelineItem)>,
    watermark: Option<Ts>,
    /// None before any record set it (see [`EngineStateRef::clock`]).
    clock: Option<Ts>,
    lateness_micros: i64,
}

impl EngineState {
    /// Whether gateway correlation IDs joined when it was saved (an IdP source mapped one).
    pub fn gateway_cid_joins(&self) -> bool {
        self.joiner.gateway_cid_joins()
    }

    /// [`crate::join::JoinerState::forget_cids`]: the correlation IDs of pending records
    /// whose source maps none now.
    pub fn forget_cids(&mut self, maps_cid: &dyn Fn(u16) -> bool) -> usize {
        self.joiner.forget_cids(maps_cid)
    }

    /// How many IdP records still joining, of the sources `of` picks, have no correlation ID.
    pub fn idp_without_cid(&self, of: &dyn Fn(u16) -> bool) -> usize {
        self.joiner.idp_without_cid(of)
    }

    /// Gives what is pending the reading its source's `[source.stages]` give it now (changed
    /// across a restart; `classify` by source place, `None` for a source not known): the IdP
    /// records still joining take their action's stage
    /// ([`crate::join::JoinerState::restage`]), or become the trigger or return it names
    /// now; and the triggers waiting on the timeline become returns, or the other way, or
    /// leave it (QA helper-70: a trigger taken out still paged). As a replay with the new
    /// config reads the same lines, save what cannot be made again from what is kept (a
    /// trigger turned into an operation: its line's other fields are gone) and the joined
    /// operations on the timeline and their closures, left as read. Only where an action's
    /// reading changed (`classify` gives how it was read and is read now, `None` where
    /// alike). How many changed, how many were dropped, and how many joined operations on
    /// the timeline have an action read otherwise now.
    pub fn restage(
        &mut self,
        classify: &dyn Fn(u16, &str) -> Option<Reads>,
    ) -> (usize, usize, usize) {
        use crate::parse::Classified;
        let now = |source: u16, action: &str| classify(source, action).map(|(_, now)| now);
        let stage_of = |record: &IdpRecord| {
            now(record.origin.source, &record.action).map(|c| match c {
                Classified::Stage(stage) => Some(stage),
                _ => None,
            })
        };
        let (mut changed, taken) = self.joiner.restage(&stage_of);
        let (mut dropped, mut as_read) = (0, 0);
        for record in taken {
            let returns = match now(record.origin.source, &record.action) {
                Some(Classified::Trigger) => false,
                Some(Classified::Return) => true,
                _ => {
                    dropped += 1;
                    continue;
                }
            };
            // As the parser makes triggers: none of a failure, or of no one (review helper-71).
            let nobody = record.user_id.is_none() && record.user_login.is_none();
            if record.status == Some(crate::model::IdpStatus::Failure) || nobody {
                dropped += 1;
                continue;
            }
            changed += 1;
            self.timeline.push((
                (record.time, SOURCE_EVENTS, origin_key(record.origin)),
                TimelineItem::Trigger(Trigger {
                    time: record.time,
                    app: record.app,
                    user_id: record.user_id,
                    user_login: record.user_login,
                    event: record.action,
                    groups: record.groups,
                    returns,
                }),
            ));
        }
        let before = self.timeline.len();
        self.timeline.retain_mut(|(key, item)| {
            let source = key.2 .0;
            match item {
                TimelineItem::Trigger(trigger) => match now(source, &trigger.event) {
                    None => true,
                    Some(class @ (Classified::Trigger | Classified::Return)) => {
                        let returns = class == Classified::Return;
                        changed += usize::from(trigger.returns != returns);
                        trigger.returns = returns;
                        true
                    }
                    Some(_) => false,
                },
                // Not yet taken by the episodes: read again. (A closure is of an operation
                // they took, under the reading it had then: it stays, or its episode would
                // wait for it for ever. Review helper-71.)
                // A joined operation is left as read: its stage is its first record's, its
                // action its last's, and neither its first action nor its IdP status is kept,
                // so it cannot be read again faithfully (QA helper-73: a leave followed by a
                // suspend made a mover was dropped, a real leaver's page missed; a failed
                // record made a trigger paged). Counted, for the start to say.
                TimelineItem::Operation(op) => {
                    as_read += usize::from(classify(source, op.action()).is_some());
                    true
                }
                TimelineItem::Close(_) | TimelineItem::Request(_) => true,
            }
        });
        dropped += before - self.timeline.len();
        self.timeline.sort_by_key(|(key, _)| *key);
        (changed, dropped, as_read)
    }

    /// Gives every app in the pending state its name under the config now, where `[apps]
    /// aliases` changed across a restart (`rename`: [`crate::config::AppsConfig::renamer`]):
    /// records read under a name that is now another's alias join, judge and time leavers
    /// as that app's, as a replay of the same logs with the new config would (a pending
    /// leaver's disable stayed unjoined, an open episode unclosed and paged). How many names
    /// changed; the open episodes two pairs' merge ended go to `ended`, disabled or
    /// cancelled.
    pub fn rename_apps(
        &mut self,
        rename: crate::model::Rename<'_>,
        ended: &mut Vec<crate::judge::Episode>,
    ) -> usize {
        use crate::judge::leavers::{LifecycleOpFields, RequestFields};
        use crate::model::rename_some_app;
        let mut renamed =
            self.joiner.rename_apps(rename) + self.episodes.rename_apps(rename, ended);
        for (_, item) in &mut self.timeline {
            renamed += usize::from(match item {
                TimelineItem::Trigger(trigger) => rename_some_app(&mut trigger.app, rename),
                TimelineItem::Operation(op) | TimelineItem::Close(op) => {
                    let mut fields = LifecycleOpFields::from(op.clone());
                    let changed = rename_some_app(&mut fields.app, rename);
                    if changed {
                        *op = fields.into();
                    }
                    changed
                }
                TimelineItem::Request(request) => {
                    let mut fields = RequestFields::from(request.clone());
                    let changed = rename_some_app(&mut fields.app, rename);
                    if changed {
                        *request = fields.into();
                    }
                    changed
                }
            });
        }
        renamed
    }
}

/// Of a checkpoint's engine state, the leaver episodes and the clock only (an evidence pack's
/// open leavers): the pending joins and the timeline are skipped, not built.
#[derive(Debug, serde::Deserialize)]
pub struct EpisodesOnly {
    episodes: crate::judge::leavers::EpisodesState,
    clock: Option<Ts>,
}

impl EpisodesOnly {
    /// The episodes open, with the time of the 2xx that disables each where one has been seen.
    pub fn open_episodes(&self) -> impl Iterator<Item = (&crate::judge::Episode, Option<Ts>)> {
        self.episodes.open()
    }
    /// The engine's clock, once anything set it.
    pub fn clock(&self) -> Option<Ts> {
        self.clock
    }
}

/// [`EngineState`], borrowed from a live engine: a checkpoint is written straight from the
/// state, with no copy of it (at a million pending joins the copy alone was hundreds of MiB).
#[derive(Debug, serde::Serialize)]
pub struct EngineStateRef<'a> {
    joiner: crate::join::JoinerStateRef<'a>,
    episodes: crate::judge::leavers::EpisodesStateRef<'a>,
    timeline: Vec<(&'a TimelineKey, &'a TimelineItem)>,
    watermark: Option<Ts>,
    /// None before any record or wall time set it: its start, `Ts(i64::MIN)`, written as a
    /// time, was a year no checkpoint reader takes, and a daemon stopped before its first
    /// record (only lines set aside, a backlog's first pass) could not start again.
    clock: Option<Ts>,
    lateness_micros: i64,
}

/// The engine's clock before anything set it.
const CLOCK_UNSET: Ts = Ts(i64::MIN);

/// What the memory caps dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    pub joins: u64,
    pub episodes: u64,
    /// Learned (app, resource id) ↔ userName pairs forgotten.
    pub names: u64,
}

/// The pipeline core.
#[derive(Debug)]
pub struct Engine {
    joiner: Joiner,
    lateness_micros: i64,
    episodes: Episodes,
    timeline: Timeline,
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
            joiner: Joiner::new(settings.join_window_secs, settings.gateway_cid_joins),
            lateness_micros: (settings.allowed_lateness_secs as i64)
                .saturating_mul(crate::time::MICROS_PER_SEC),
            episodes: Episodes::new(settings.policy),
            timeline: Timeline::default(),
            watermark: None,
            clock: CLOCK_UNSET,
            outputs: Vec::new(),
            joined: Vec::new(),
            leaver_events: Vec::new(),
        }
    }

    /// The largest event time seen (`as_of` unless overridden).
    pub fn watermark(&self) -> Option<Ts> {
        self.watermark
    }

    /// The clock the engine settles by (see [`Engine::advance`]).
    pub fn clock(&self) -> Ts {
        self.clock
    }

    /// Operations and writes waiting for their join window.
    pub fn join_pending(&self) -> usize {
        self.joiner.pending()
    }

    /// (app, resource id) ↔ userName pairs the join has learned.
    pub fn known_names(&self) -> usize {
        self.joiner.known_names()
    }

    /// Ambiguous matches and evictions so far.
    pub fn join_stats(&self) -> crate::join::JoinStats {
        self.joiner.stats()
    }

    /// How many leaver episodes are not yet disabled.
    pub fn open_episode_count(&self) -> usize {
        self.episodes.open_count()
    }

    /// Leaver episodes not yet disabled.
    pub fn open_episodes(&self) -> Vec<&Episode> {
        self.episodes.open_episodes()
    }

    /// The time before which the leaver episodes have seen every operation: nothing pending
    /// in the join or waiting its turn in the timeline is earlier (what `advance` releases).
    pub fn episodes_final_before(&mut self) -> Ts {
        let settled_until = Ts(self.clock.0.saturating_sub(self.lateness_micros));
        let floor = Ts(settled_until.0.saturating_sub(self.joiner.window_micros()));
        match self.joiner.pending_floor() {
            Some(pending) => floor.min(pending),
            None => floor,
        }
    }

    /// For each of the `pairs` (app, user), folded (the user by login or by id), the earliest
    /// time a leaver operation the episodes have not acted on yet — pending in the join,
    /// joined and waiting in the timeline, or seen and its closure waiting there — may have
    /// disabled that user, in the pairs' order. Until
    /// such an operation is seen, an episode past its deadline may still turn out
    /// disabled in time (a retry that succeeded before the deadline settles a join window plus
    /// the allowed lateness after it, or two windows without a shared ID). Only the wanted
    /// pairs are looked at: the daemon asks for the few leavers still undecided, at every view.
    ///
    /// The first call starts the join's index of pending leaver operations (from what is
    /// pending), kept from then on: `replay` never asks, and keeping it cost 1.4% of its
    /// instructions.
    pub fn unseen_leavers(&mut self, pairs: &[(String, String)]) -> Vec<Option<Ts>> {
        self.joiner.track_leavers();
        let mut earliest: Vec<Option<Ts>> = vec![None; pairs.len()];
        if pairs.is_empty() {
            return earliest;
        }
        // Each pair's first place; one listed twice gets the same answer at both.
        let mut wanted: crate::model::FastMap<(&str, &str), usize> = Default::default();
        for (i, (app, user)) in pairs.iter().enumerate() {
            wanted.entry((app.as_str(), user.as_str())).or_insert(i);
        }
        let index = |app: Option<&str>, user: &str| {
            let app = crate::model::fold_case(app.unwrap_or_default());
            let user = crate::model::fold_case(user);
            wanted.get(&(app.as_ref(), user.as_ref())).copied()
        };
        let wanted_record = |app: Option<&str>, users: [Option<&str>; 2]| {
            users
                .into_iter()
                .flatten()
                .any(|user| index(app, user).is_some())
        };
        let mut add = |app: Option<&str>, users: [Option<&str>; 2], at: Ts| {
            for i in users
                .into_iter()
                .flatten()
                .filter_map(|user| index(app, user))
            {
                earliest[i] = Some(earliest[i].map_or(at, |t| t.min(at)));
            }
        };
        let hashes: Vec<u64> = wanted
            .keys()
            .map(|(app, user)| self.joiner.pair_hash(Some(app), user))
            .collect();
        let pending = self.joiner.pending_leavers(&hashes, |record| {
            wanted_record(
                record.app.as_deref(),
                [record.user_login.as_deref(), record.user_id.as_deref()],
            )
        });
        for (record, at) in pending {
            add(
                record.app.as_deref(),
                [record.user_login.as_deref(), record.user_id.as_deref()],
                at,
            );
        }
        // The operations' lane only: the requests' holds every request of the last window.
        // A disable waiting for its 2xx's turn (a closure) closes the episode then.
        for Timed(_, item) in self.timeline.0[usize::from(OPERATIONS)].iter() {
            if let TimelineItem::Operation(op) | TimelineItem::Close(op) = item {
                if let (Stage::Leaver, Some(at)) = (op.stage, op.first_success) {
                    add(op.app(), [op.user_login(), op.user_id()], at);
                }
            }
        }
        // Returns at the source waiting in the timeline: one cancels the episode when it is
        // seen (an app-less one, if its clock was an app-less trigger's; held for any pair of
        // the user here, only until the return is seen).
        for Timed(_, item) in self.timeline.0[usize::from(SOURCE_EVENTS)].iter() {
            let TimelineItem::Trigger(t) = item else {
                continue;
            };
            if !t.returns {
                continue;
            }
            let users: Vec<_> = [t.user_login.as_deref(), t.user_id.as_deref()]
                .into_iter()
                .flatten()
                .map(crate::model::fold_case)
                .collect();
            let return_app = t.app.as_deref().map(crate::model::fold_case);
            for (&(app, user), &i) in &wanted {
                let app_matches = return_app.as_deref().is_none_or(|a| a == app);
                if app_matches && users.iter().any(|u| u == user) {
                    earliest[i] = Some(earliest[i].map_or(t.time, |e| e.min(t.time)));
                }
            }
        }
        for (i, (app, user)) in pairs.iter().enumerate() {
            earliest[i] = earliest[wanted[&(app.as_str(), user.as_str())]];
        }
        earliest
    }

    /// The engine's state, for a checkpoint (taken between records, never inside one):
    /// borrowed, and serialized exactly as an [`EngineState`] is read back.
    pub fn snapshot(&self) -> EngineStateRef<'_> {
        EngineStateRef {
            joiner: self.joiner.snapshot(),
            episodes: self.episodes.snapshot(),
            timeline: self.timeline.sorted(),
            watermark: self.watermark,
            clock: Some(self.clock).filter(|clock| *clock != CLOCK_UNSET),
            lateness_micros: self.lateness_micros,
        }
    }

    /// Rebuilds an engine from a checkpoint; the policy comes from the current config.
    pub fn restore(mut state: EngineState, settings: EngineSettings) -> Engine {
        // A request waits a window on the timeline (see `ingest`): by the window now, where
        // it changed (QA helper-70: grown, a request was checked before the disable it
        // followed was placed, and its post-disable activity was missed).
        let window = (settings.join_window_secs as i64).saturating_mul(crate::time::MICROS_PER_SEC);
        for (key, item) in &mut state.timeline {
            if let TimelineItem::Request(request) = item {
                key.0 = Ts(request.time.0.saturating_add(window));
            }
        }
        Engine {
            // The config's window and lateness, not the checkpoint's: a config changed across
            // a restart applies (the daemon's clock already uses the config's lateness).
            joiner: crate::join::Joiner::restore(
                state.joiner,
                settings.join_window_secs,
                settings.gateway_cid_joins,
            ),
            lateness_micros: (settings.allowed_lateness_secs as i64)
                .saturating_mul(crate::time::MICROS_PER_SEC),
            episodes: Episodes::restore(settings.policy, state.episodes),
            timeline: state.timeline.into_iter().collect(),
            watermark: state.watermark,
            clock: state.clock.unwrap_or(CLOCK_UNSET),
            outputs: Vec::new(),
            joined: Vec::new(),
            leaver_events: Vec::new(),
        }
    }

    /// The open leaver episodes a restore decided otherwise than before (the high-risk
    /// policy changed): (app, the user as it opened, start), once.
    pub fn take_redecided(&mut self) -> Vec<(String, String, Ts)> {
        self.episodes.take_redecided()
    }

    /// Enforces the memory caps: settles the oldest pending joins early, drops the oldest
    /// open episodes (handing them out, so a breached one is still written) and forgets the
    /// oldest learned names.
    pub fn enforce_caps(&mut self, caps: &crate::config::PipelineConfig) -> Evictions {
        let mut evictions = Evictions::default();
        let mut joined = std::mem::take(&mut self.joined);
        while self.joiner.pending() > caps.max_pending_joins
            && self.joiner.evict_oldest(&mut joined)
        {
            evictions.joins += 1;
        }
        self.settle_joined(&mut joined);
        self.joined = joined;
        while self.episodes.open_count() > caps.max_open_episodes {
            match self.episodes.evict_oldest_open() {
                Some(episode) => {
                    evictions.episodes += 1;
                    self.outputs.push(Output::Episode(episode));
                }
                None => break,
            }
        }
        evictions.names = self.joiner.forget_names(caps.max_known_names);
        evictions
    }

    /// Takes up leaver episodes an earlier replay left open (see [`Episodes::carry_over`]).
    pub fn carry_over(&mut self, episodes: impl IntoIterator<Item = Episode>) {
        for episode in episodes {
            self.episodes.carry_over(episode);
        }
    }

    /// Takes up pairs an earlier replay saw disabled (see [`Episodes::carry_closed`]).
    pub fn carry_closed(&mut self, pairs: &[crate::judge::Closed]) {
        for closed in pairs {
            self.episodes.carry_closed(closed);
        }
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
                    self.timeline.push(
                        (shifted, REQUESTS, origin_key(gateway.origin)),
                        TimelineItem::Request(Request::new(
                            gateway.time,
                            principal,
                            gateway.app.as_deref(),
                            gateway.correlation_id.as_deref(),
                            gateway.method,
                            &gateway.path,
                            gateway.status,
                        )),
                    );
                }
                // Only SCIM writes are attempts (clarification 4); reads never join.
                if gateway.write.is_some() {
                    if let Some(unjoined) = self.joiner.join_gateway(&gateway) {
                        self.joiner.pool_gateway(gateway, unjoined);
                    }
                }
            }
            Record::Trigger(trigger) => {
                self.timeline.push(
                    (trigger.time, SOURCE_EVENTS, origin_key(trigger.origin)),
                    TimelineItem::Trigger(Trigger {
                        time: trigger.time,
                        app: trigger.app,
                        user_id: trigger.user_id,
                        user_login: trigger.user_login,
                        event: trigger.event,
                        groups: trigger.groups,
                        returns: trigger.returns,
                    }),
                );
            }
            Record::Note(note) => self.joiner.push_note(note),
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
        let floor = self.episodes_final_before();
        self.release_timeline(Some(floor), usize::MAX);
    }

    /// Settles everything as if every window had passed (end of replay input), then reports
    /// the episodes still open as of `as_of`.
    pub fn finish(&mut self) {
        self.finish_in_steps(usize::MAX, |_| Ok::<(), std::convert::Infallible>(()))
            .unwrap_or_else(|never| match never {});
    }

    /// [`Engine::finish`] in steps of at most `step` operations or timeline items, calling
    /// `between` after each so the outputs so far can be taken ([`Engine::drain`]) and worked
    /// on while the rest are settled. The outputs, and their order, are [`Engine::finish`]'s.
    pub fn finish_in_steps<E>(
        &mut self,
        step: usize,
        mut between: impl FnMut(&mut Engine) -> Result<(), E>,
    ) -> Result<(), E> {
        let step = step.max(1);
        let mut joined = std::mem::take(&mut self.joined);
        self.joiner.expire_all(&mut joined);
        let mut pending = joined.into_iter();
        let mut chunk = Vec::new();
        loop {
            chunk.extend(pending.by_ref().take(step));
            if chunk.is_empty() {
                break;
            }
            self.settle_joined(&mut chunk);
            between(self)?;
        }
        while self.release_timeline(None, step) {
            between(self)?;
        }
        for episode in self.episodes.open_episodes() {
            self.outputs.push(Output::Episode(episode.clone()));
        }
        between(self)
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
                self.timeline.push(
                    (operation.time, OPERATIONS, origin_key(origin)),
                    TimelineItem::Operation(LifecycleOp::of(&operation)),
                );
            }
            self.outputs.push(Output::Operation(Box::new(operation)));
        }
    }

    /// Releases the timeline's items before `floor` in order, at most `limit` of them: `true`
    /// when it stopped at the limit (there may be more).
    fn release_timeline(&mut self, floor: Option<Ts>, limit: usize) -> bool {
        for _ in 0..limit {
            let Some(Timed(key, item)) = self.timeline.pop_before(floor) else {
                return false;
            };
            #[cfg(test)]
            self.episodes.assert_open_index();
            match item {
                TimelineItem::Trigger(trigger) => {
                    self.episodes.on_trigger(&trigger, &mut self.leaver_events)
                }
                TimelineItem::Operation(op) => {
                    if self.episodes.on_operation(&op, &mut self.leaver_events) {
                        // It disables at its 2xx, so it closes then (never before its own
                        // place): an operation logged later but answered earlier closes
                        // first. Requests are checked a window after their time, by when
                        // every disable answered before them has closed.
                        let at = op.first_success.map_or(key.0, |t| t.max(key.0));
                        self.timeline
                            .push((at, CLOSURES, key.2), TimelineItem::Close(op));
                    }
                }
                TimelineItem::Request(request) => {
                    self.episodes.on_request(&request, &mut self.leaver_events)
                }
                TimelineItem::Close(op) => self.episodes.on_close(&op, &mut self.leaver_events),
            }
            for event in self.leaver_events.drain(..) {
                self.outputs.push(match event {
                    LeaverEvent::Ended(episode) => Output::Episode(episode),
                    LeaverEvent::PostDisable(activity) => Output::PostDisable(activity),
                });
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HighRiskPolicy, SloConfig};
    use crate::model::{GatewayRecord, IdpRecord, IdpStatus, Method, TriggerRecord, WriteKind};

    const T0: i64 = 1_782_892_800; // 2026-07-01T08:00:00Z

    fn at(secs: i64) -> Ts {
        Ts::from_secs(T0 + secs)
    }

    struct Scenario {
        engine: Engine,
        outputs: Vec<Output>,
        line: u64,
    }

    impl Scenario {
        fn settings() -> EngineSettings {
            let mut slo = SloConfig::default();
            slo.high_risk.push(HighRiskPolicy {
                apps: vec!["aws-prod".into()],
                users: vec![],
                groups: vec![],
                disable_within_secs: 900,
            });
            EngineSettings {
                join_window_secs: 600,
                allowed_lateness_secs: 60,
                gateway_cid_joins: true,
                policy: Policy::from_config(&slo),
            }
        }

        fn new() -> Scenario {
            Scenario {
                engine: Engine::new(Scenario::settings()),
                outputs: Vec::new(),
                line: 0,
            }
        }

        fn origin(&mut self, source: u16) -> Origin {
            self.line += 1;
            Origin {
                source,
                file: 0,
                line: self.line,
            }
        }

        fn idp(
            &mut self,
            secs: i64,
            cid: &str,
            stage: Stage,
            user: &str,
            status: Option<IdpStatus>,
        ) -> &mut Self {
            self.idp_naming(secs, cid, stage, Some(user), None, status)
        }

        /// An IdP record naming the user by login, by id, or both.
        fn idp_naming(
            &mut self,
            secs: i64,
            cid: &str,
            stage: Stage,
            login: Option<&str>,
            id: Option<&str>,
            status: Option<IdpStatus>,
        ) -> &mut Self {
            let origin = self.origin(0);
            self.engine.ingest(Record::Idp(IdpRecord {
                time: at(secs),
                correlation_id: Some(cid.into()),
                operation_id: None,
                action: format!("{stage:?}").to_lowercase(),
                stage,
                app: Some("aws-prod".into()),
                user_id: id.map(str::to_string),
                user_login: login.map(str::to_string),
                target_id: None,
                status,
                error: None,
                trigger_time: None,
                groups: vec![],
                origin,
            }));
            self
        }

        /// A gateway line on the gateway source at `secs`: a PATCH to `aws-prod` that the
        /// helpers below make a write or a read.
        fn gateway_line(&mut self, secs: i64) -> GatewayRecord {
            GatewayRecord {
                time: at(secs),
                correlation_id: None,
                method: Method::Patch,
                path: "/scim/v2/Users/u-1".into(),
                status: 200,
                duration_ms: None,
                app: Some("aws-prod".into()),
                principal: None,
                user_name: None,
                resource_id: None,
                write: None,
                error_detail: None,
                members: Box::default(),
                origin: self.origin(1),
            }
        }

        fn gateway(&mut self, secs: i64, cid: &str, write: WriteKind, status: u16) -> &mut Self {
            let record = GatewayRecord {
                correlation_id: Some(cid.into()),
                status,
                resource_id: Some("u-1".into()),
                write: Some(write),
                ..self.gateway_line(secs)
            };
            self.engine.ingest(Record::Gateway(record));
            self
        }

        /// An IdP record with no shared ID (Entra-like): its own ID and the target's SCIM id.
        fn idp_own_id(
            &mut self,
            secs: i64,
            operation_id: &str,
            stage: Stage,
            target: &str,
        ) -> &mut Self {
            let origin = self.origin(0);
            self.engine.ingest(Record::Idp(IdpRecord {
                time: at(secs),
                correlation_id: None,
                operation_id: Some(operation_id.into()),
                action: "update".into(),
                stage,
                app: Some("aws-prod".into()),
                user_id: Some(format!("id-{target}")),
                user_login: None,
                target_id: Some(target.into()),
                status: Some(IdpStatus::Success),
                error: None,
                trigger_time: None,
                groups: vec![],
                origin,
            }));
            self
        }

        /// A gateway write with no correlation ID.
        fn write_to(
            &mut self,
            secs: i64,
            resource: &str,
            write: WriteKind,
            status: u16,
        ) -> &mut Self {
            let record = GatewayRecord {
                path: format!("/scim/v2/Users/{resource}"),
                status,
                resource_id: Some(resource.into()),
                write: Some(write),
                ..self.gateway_line(secs)
            };
            self.engine.ingest(Record::Gateway(record));
            self
        }

        /// A read authenticated as `user` (no write: it only goes on the timeline).
        fn request(&mut self, secs: i64, user: &str) -> &mut Self {
            let record = GatewayRecord {
                method: Method::Get,
                path: "/api/projects".into(),
                principal: Some(user.into()),
                ..self.gateway_line(secs)
            };
            self.engine.ingest(Record::Gateway(record));
            self
        }

        fn trigger(&mut self, secs: i64, user: &str) -> &mut Self {
            self.source_event(secs, user, None, false)
        }

        /// A lifecycle event at the source of truth: a trigger, or (`returns`) the user
        /// enabled again; with `app`, for that app only.
        fn source_event(
            &mut self,
            secs: i64,
            user: &str,
            app: Option<&str>,
            returns: bool,
        ) -> &mut Self {
            self.source_event_with_id(secs, user, None, app, returns)
        }

        fn source_event_with_id(
            &mut self,
            secs: i64,
            user: &str,
            user_id: Option<&str>,
            app: Option<&str>,
            returns: bool,
        ) -> &mut Self {
            let origin = self.origin(2);
            self.engine.ingest(Record::Trigger(TriggerRecord {
                time: at(secs),
                app: app.map(str::to_string),
                user_id: user_id.map(str::to_string),
                user_login: Some(user.into()),
                event: if returns { "enabled" } else { "terminated" }.into(),
                groups: vec![],
                returns,
                origin,
            }));
            self
        }

        /// Restarts the engine from a checkpoint of its state (written as JSON and read back
        /// as an owned state), as the daemon does; returns the checkpoint.
        fn restart(&mut self) -> String {
            let json = serde_json::to_string(&self.engine.snapshot()).unwrap();
            let state: EngineState = serde_json::from_str(&json).unwrap();
            self.engine = Engine::restore(state, Scenario::settings());
            json
        }

        fn finish(&mut self) -> &mut Self {
            self.engine.episodes.assert_open_index();
            self.engine.finish();
            self.engine.episodes.assert_open_index();
            self.outputs.extend(self.engine.drain());
            self
        }

        fn operations(&self) -> Vec<&Operation> {
            self.outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Operation(op) => Some(op.as_ref()),
                    _ => None,
                })
                .collect()
        }

        fn episodes(&self) -> Vec<&Episode> {
            self.outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Episode(e) => Some(e),
                    _ => None,
                })
                .collect()
        }
    }

    /// A checkpoint taken mid-stream (borrowed state, written as JSON) and read back as an
    /// owned state restores an engine that finishes exactly as the uninterrupted one does.
    #[test]
    fn a_checkpoint_round_trip_changes_nothing() {
        fn feed(s: &mut Scenario) {
            s.idp(0, "c1", Stage::Leaver, "a@x", Some(IdpStatus::Success))
                .gateway(1, "c1", WriteKind::Disable, 429)
                .trigger(2, "b@x")
                .idp(3, "c2", Stage::Leaver, "b@x", None)
                .idp_own_id(4, "op-9", Stage::Joiner, "t-9")
                .write_to(5, "t-9", WriteKind::Update, 200);
            s.engine.advance(at(5));
            s.outputs.extend(s.engine.drain());
        }
        let mut whole = Scenario::new();
        feed(&mut whole);
        let mut restored = Scenario::new();
        feed(&mut restored);
        let json = restored.restart();
        assert_eq!(
            serde_json::to_string(&restored.engine.snapshot()).unwrap(),
            json,
            "the restored state writes the same checkpoint"
        );
        for s in [&mut whole, &mut restored] {
            s.gateway(40, "c1", WriteKind::Disable, 200)
                .gateway(50, "c2", WriteKind::Disable, 200)
                .finish();
        }
        assert_eq!(whole.outputs, restored.outputs);
        assert_eq!(whole.episodes().len(), 2);
    }

    /// The join window and lateness come from the config on a restore, not from the
    /// checkpoint: a window shortened across a restart settles what is pending by it.
    #[test]
    fn a_restore_takes_the_configs_join_window_and_lateness() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Mover, "a@x", Some(IdpStatus::Success));
        s.engine.advance(at(30));
        assert_eq!(s.engine.join_pending(), 1, "600 s window: still pending");
        let json = serde_json::to_string(&s.engine.snapshot()).unwrap();
        let mut settings = Scenario::settings();
        settings.join_window_secs = 5;
        settings.allowed_lateness_secs = 1;
        let mut engine = Engine::restore(serde_json::from_str(&json).unwrap(), settings);
        let restored: serde_json::Value = serde_json::to_value(engine.snapshot()).unwrap();
        assert_eq!(restored["lateness_micros"], 1_000_000);
        engine.advance(at(30));
        assert_eq!(engine.join_pending(), 0, "5 s window: settled");
        let settled: Vec<Output> = engine.drain().collect();
        assert!(
            settled
                .iter()
                .any(|o| matches!(o, Output::Operation(op) if op.outcome == Outcome::Unconfirmed)),
            "{settled:?}"
        );
    }

    /// `[source.stages]` changed across a restart reach what already left the join: a leaver
    /// operation waiting on the timeline, made a mover now, opens no episode; a trigger
    /// there, no longer one, starts no clock; an IdP record still joining whose action is a
    /// trigger now becomes one (QA helper-70: only the records still joining were restaged,
    /// and the timeline's paged overdue).
    #[test]
    fn changed_stages_reach_the_timeline() {
        use crate::parse::Classified;
        let feed = |s: &mut Scenario| {
            // c0, still joining (a late retry), holds the timeline from its first record on.
            s.idp(0, "c0", Stage::Mover, "z@x", Some(IdpStatus::Success))
                .idp(1, "c1", Stage::Leaver, "a@x", Some(IdpStatus::Success))
                .gateway(2, "c1", WriteKind::Disable, 500)
                .trigger(3, "c@x")
                .idp(650, "c2", Stage::Leaver, "c@x", None)
                .gateway(660, "c0", WriteKind::Update, 200);
            s.engine.advance(at(670));
            s.outputs.extend(s.engine.drain());
        };
        let restarted = |classify: &dyn Fn(u16, &str) -> Option<Reads>| {
            let mut s = Scenario::new();
            feed(&mut s);
            let json = serde_json::to_string(&s.engine.snapshot()).unwrap();
            let mut state: EngineState = serde_json::from_str(&json).unwrap();
            let counts = state.restage(classify);
            s.engine = Engine::restore(state, Scenario::settings());
            (s, counts)
        };
        let episodes = |s: &mut Scenario| -> Vec<(String, Ts)> {
            s.finish();
            let mut found: Vec<(String, Ts)> = (s.episodes().iter())
                .map(|e| (e.user().to_string(), e.initiated_at))
                .collect();
            found.sort();
            found
        };
        let (mut unchanged, counts) = restarted(&|_, _| None);
        let waiting = serde_json::to_value(unchanged.engine.snapshot()).unwrap();
        assert_eq!(
            waiting["timeline"].as_array().unwrap().len(),
            2,
            "{waiting}"
        );
        assert_eq!(counts, (0, 0, 0));
        assert_eq!(
            episodes(&mut unchanged),
            [("a@x".into(), at(1)), ("c@x".into(), at(3))]
        );
        // The trigger's event no longer one: c's clock starts at her leave.
        let (mut untriggered, counts) = restarted(&|source, _| {
            (source == 2).then_some((Classified::Trigger, Classified::Other))
        });
        assert_eq!(counts, (0, 1, 0));
        assert_eq!(
            episodes(&mut untriggered),
            [("a@x".into(), at(1)), ("c@x".into(), at(650))]
        );
        // The leavers made movers: the one on the timeline and the one joining.
        let leaver = Classified::Stage(Stage::Leaver);
        let (mut movers, counts) = restarted(&|source, action| {
            (source == 0 && action == "leaver").then_some((leaver, Classified::Stage(Stage::Mover)))
        });
        // The one joined is left as read (its first action and IdP status are not kept:
        // QA helper-73), and counted.
        assert_eq!(counts, (1, 0, 1));
        assert_eq!(episodes(&mut movers), [("a@x".into(), at(1))]);
        // The leavers made triggers, the one still joining and the one on the timeline: each
        // a clock from the timeline (review helper-71: the timeline's was dropped).
        let (turned, counts) = restarted(&|source, action| {
            (source == 0 && action == "leaver").then_some((leaver, Classified::Trigger))
        });
        assert_eq!(counts, (1, 0, 1));
        let state = serde_json::to_value(turned.engine.snapshot()).unwrap();
        let triggers: Vec<&str> = (state["timeline"].as_array().unwrap().iter())
            .filter_map(|item| item[1]["Trigger"]["user_login"].as_str())
            .collect();
        assert_eq!(triggers, ["c@x", "c@x"], "{state}");
        // An operation whose stage another of its records gave (its last action read
        // otherwise before): left as it is.
        let (mut other, counts) = restarted(&|source, action| {
            let before = Classified::Stage(Stage::Mover);
            (source == 0 && action == "leaver").then_some((before, Classified::Other))
        });
        assert_eq!(counts, (0, 1, 1), "the record still joining is read again");
        assert_eq!(episodes(&mut other), [("a@x".into(), at(1))]);
    }

    /// A request waiting on the timeline waits the window the config gives now, where it
    /// changed across a restart: grown, the disable it followed is placed before it is
    /// checked (QA helper-70: post-disable activity missed).
    #[test]
    fn a_restore_waits_requests_by_the_configs_window() {
        let mut s = Scenario::new();
        s.request(10, "a@x");
        let key = |engine: &Engine| {
            let state = serde_json::to_value(engine.snapshot()).unwrap();
            state["timeline"][0][0][0].as_str().unwrap().to_string()
        };
        assert_eq!(key(&s.engine), at(610).to_string());
        let json = serde_json::to_string(&s.engine.snapshot()).unwrap();
        let mut settings = Scenario::settings();
        settings.join_window_secs = 900;
        let engine = Engine::restore(serde_json::from_str(&json).unwrap(), settings);
        assert_eq!(key(&engine), at(910).to_string());
    }

    #[test]
    fn retries_under_one_id_are_attempts_and_the_last_one_decides() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Leaver, "a@x", Some(IdpStatus::Success))
            .gateway(1, "c1", WriteKind::Disable, 429)
            .gateway(5, "c1", WriteKind::Disable, 429)
            .gateway(40, "c1", WriteKind::Disable, 200)
            .finish();
        let ops = s.operations();
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].attempts.len(), 3);
        assert_eq!(ops[0].outcome, Outcome::Succeeded);
        assert_eq!(ops[0].lag_ms, Some(1000));
        let episode = s.episodes()[0];
        assert_eq!(
            episode.latency_seconds(),
            Some(40.0),
            "latency runs to the first 2xx"
        );
    }

    #[test]
    fn an_attempt_outside_the_join_window_is_unattributed_and_the_claim_unconfirmed() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Mover, "a@x", Some(IdpStatus::Success))
            .gateway(601, "c1", WriteKind::Update, 200)
            .finish();
        let outcomes: Vec<Outcome> = s.operations().iter().map(|o| o.outcome).collect();
        assert_eq!(outcomes, [Outcome::Unconfirmed, Outcome::Unattributed]);
    }

    /// A write no IdP record claims, refused with 401: not a cause in the report
    /// (clarification 1), but a refused token all the same, which ScimAuthFailures counts
    /// and samples.
    #[test]
    fn an_unattributed_write_refused_with_401_counts_as_an_auth_failure() {
        let mut s = Scenario::new();
        s.gateway(0, "stolen-1", WriteKind::Update, 401)
            .gateway(1, "manual-1", WriteKind::Update, 200)
            .finish();
        let ops = s.operations();
        assert!(ops
            .iter()
            .all(|o| o.outcome == Outcome::Unattributed && o.cause.is_none()));
        let causes: Vec<_> = ops.iter().map(|o| o.alert_cause()).collect();
        assert_eq!(causes, [Some(crate::model::Cause::Unauthorized), None]);
        let mut evidence = crate::alert::evidence::Evidence::default();
        for op in &ops {
            evidence.record_operation(op, None);
        }
        assert_eq!(evidence.auth_failures_by_app(at(-60))["aws-prod"], 1);
        assert_eq!(
            evidence.sample_auth_failures("aws-prod", at(-60), 5),
            ["stolen-1"]
        );
        assert_eq!(evidence.unattributed_auth_failures("aws-prod", at(-60)), 1);
    }

    #[test]
    fn an_id_used_again_after_a_window_is_two_operations_each_with_its_own_attempts() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Mover, "a@x", Some(IdpStatus::Success))
            .gateway(2, "c1", WriteKind::Update, 500)
            .gateway(3, "c1", WriteKind::Update, 200)
            .idp(1500, "c1", Stage::Mover, "a@x", Some(IdpStatus::Success))
            .gateway(1501, "c1", WriteKind::Update, 200)
            .finish();
        let ops = s.operations();
        let seen: Vec<(usize, Outcome)> =
            ops.iter().map(|o| (o.attempts.len(), o.outcome)).collect();
        assert_eq!(seen, [(2, Outcome::Succeeded), (1, Outcome::Succeeded)]);
        assert!(ops
            .iter()
            .all(|o| o.join_method == crate::join::JoinMethod::CorrelationId));
    }

    #[test]
    fn a_gateway_answer_logged_before_its_idp_record_still_joins() {
        let mut s = Scenario::new();
        s.gateway(0, "c1", WriteKind::CreateUser, 201)
            .idp(300, "c1", Stage::Joiner, "a@x", Some(IdpStatus::Success))
            .finish();
        let ops = s.operations();
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].outcome, Outcome::Succeeded);
        assert_eq!(ops[0].lag_ms, Some(-300_000));
    }

    #[test]
    fn a_404_on_a_disable_leaves_the_episode_open_for_a_person() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Leaver, "a@x", Some(IdpStatus::Failure))
            .gateway(1, "c1", WriteKind::Disable, 404)
            .finish();
        assert_eq!(s.operations()[0].cause, Some(crate::model::Cause::NotFound));
        let episode = s.episodes()[0];
        assert_eq!(episode.state, crate::judge::EpisodeState::Open);
        assert!(episode.breached(at(901)));
        assert!(!episode.breached(at(899)));
    }

    /// Operations reach the timeline in the order of their IdP records, but the first 2xx
    /// disables: A, logged at 0 and answered at 480 (after a 503), comes before B, logged at
    /// 300 and answered at 360. B disabled the account, so a request made as the user at 420
    /// is post-disable activity, and the episode's clock still starts at A.
    #[test]
    fn the_first_2xx_disables_whichever_operation_was_logged_first() {
        let mut s = Scenario::new();
        s.idp(0, "cA", Stage::Leaver, "a@x", Some(IdpStatus::Success))
            .gateway(1, "cA", WriteKind::Disable, 503)
            .idp(300, "cB", Stage::Leaver, "a@x", Some(IdpStatus::Success))
            .gateway(360, "cB", WriteKind::Disable, 200)
            .request(420, "a@x")
            .gateway(480, "cA", WriteKind::Disable, 200)
            .finish();
        let episodes = s.episodes();
        assert_eq!(episodes.len(), 1, "{episodes:?}");
        let episode = episodes[0];
        assert_eq!(episode.state, crate::judge::EpisodeState::Disabled);
        assert_eq!(episode.initiated_at, at(0));
        assert_eq!(episode.disabled_at, Some(at(360)));
        assert_eq!(episode.disabled_by.as_deref(), Some("cB"));
        assert_eq!(episode.correlation_ids, ["cA", "cB"]);
        let after: Vec<_> = s
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::PostDisable(p) => Some((p.time, p.disabled_at)),
                _ => None,
            })
            .collect();
        assert_eq!(after, [(at(420), at(360))]);
    }

    /// Between its operation and its 2xx's turn, an episode is open but no longer listed among
    /// the open (its disable has been seen: the daemon does not call it overdue, nor does the
    /// memory cap drop it), the hold still counts the waiting 2xx, and a checkpoint keeps the
    /// disable waiting.
    #[test]
    fn a_disable_waiting_for_its_2xx_holds_the_episode_across_a_checkpoint() {
        let pair = [("aws-prod".to_string(), "a@x".to_string())];
        let mut s = Scenario::new();
        s.idp(0, "cA", Stage::Leaver, "a@x", Some(IdpStatus::Success))
            .gateway(1, "cA", WriteKind::Disable, 503)
            .gateway(480, "cA", WriteKind::Disable, 200)
            .idp(100, "cC", Stage::Mover, "b@x", Some(IdpStatus::Success))
            .gateway(1000, "cC", WriteKind::Update, 200);
        // The join settles A a window and the lateness after its last attempt; C, still
        // pending, holds the timeline at its time (100): A (at 0) is released, its 2xx (at
        // 480) not yet.
        s.engine.advance(at(480 + 661));
        assert_eq!(s.engine.join_pending(), 1);
        assert_eq!(s.engine.open_episodes().len(), 0);
        assert_eq!(s.engine.unseen_leavers(&pair), [Some(at(480))]);
        s.restart();
        assert_eq!(s.engine.unseen_leavers(&pair), [Some(at(480))]);
        s.engine.advance(at(1000 + 661));
        s.outputs.extend(s.engine.drain());
        let episodes = s.episodes();
        assert_eq!(episodes.len(), 1);
        assert_eq!(episodes[0].disabled_at, Some(at(480)));
        assert_eq!(s.engine.unseen_leavers(&pair), [None]);
        s.finish();
    }

    /// A disable seen under the user id alone closes its episode though a later record (the
    /// IdP's retry, naming the login too) re-keys the pair by login before its 2xx's turn.
    #[test]
    fn a_waiting_disable_finds_its_episode_re_keyed_by_login() {
        let mut s = Scenario::new();
        s.idp_naming(
            0,
            "c1",
            Stage::Leaver,
            None,
            Some("u-42"),
            Some(IdpStatus::Success),
        )
        .gateway(300, "c1", WriteKind::Disable, 200)
        .idp_naming(
            100,
            "c2",
            Stage::Leaver,
            Some("ada@x"),
            Some("u-42"),
            Some(IdpStatus::Failure),
        )
        .gateway(101, "c2", WriteKind::Disable, 503)
        .finish();
        let episodes = s.episodes();
        assert_eq!(episodes.len(), 1, "{episodes:?}");
        assert_eq!(episodes[0].state, crate::judge::EpisodeState::Disabled);
        assert_eq!(episodes[0].disabled_at, Some(at(300)));
        assert_eq!(episodes[0].disabled_by.as_deref(), Some("c1"));
    }

    /// A user renamed while their episode is open (the disable refused under the old login,
    /// the retry sent under the new one, the same user id) has one episode, timed from the
    /// first operation; requests under either login after the disable are post-disable
    /// activity. It was two: the old one open for ever (a false breach and page).
    #[test]
    fn a_user_renamed_while_leaving_has_one_episode() {
        let mut s = Scenario::new();
        s.idp_naming(
            0,
            "c1",
            Stage::Leaver,
            Some("alice@x"),
            Some("u-100"),
            Some(IdpStatus::Failure),
        )
        .gateway(1, "c1", WriteKind::Disable, 503)
        .idp_naming(
            170,
            "c2",
            Stage::Mover,
            Some("alice.smith@x"),
            Some("u-100"),
            Some(IdpStatus::Success),
        )
        .gateway(171, "c2", WriteKind::Update, 200)
        .idp_naming(
            180,
            "c3",
            Stage::Leaver,
            Some("alice.smith@x"),
            Some("u-100"),
            Some(IdpStatus::Success),
        )
        .gateway(181, "c3", WriteKind::Disable, 200)
        .request(1200, "alice@x")
        .request(1250, "Alice.Smith@x")
        // A delete under the new login after the disable opens no second episode
        // (clarification 15); a rehire under it ends the post-disable intervals of both.
        .idp_naming(
            1300,
            "c4",
            Stage::Leaver,
            Some("alice.smith@x"),
            Some("u-100"),
            Some(IdpStatus::Success),
        )
        .gateway(1301, "c4", WriteKind::DeleteUser, 204)
        .idp_naming(
            1400,
            "c5",
            Stage::Joiner,
            Some("alice.smith@x"),
            Some("u-100"),
            Some(IdpStatus::Success),
        )
        .gateway(1401, "c5", WriteKind::CreateUser, 201)
        .request(1500, "alice.smith@x")
        .request(1550, "alice@x")
        .finish();
        let episodes = s.episodes();
        assert_eq!(episodes.len(), 1, "{episodes:?}");
        let episode = episodes[0];
        assert_eq!(episode.state, crate::judge::EpisodeState::Disabled);
        assert_eq!(episode.initiated_at, at(0));
        assert_eq!(episode.disabled_at, Some(at(181)));
        assert_eq!(episode.user_login.as_deref(), Some("alice@x"));
        assert_eq!(episode.correlation_ids, ["c1", "c3"]);
        let after: Vec<_> = s
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::PostDisable(p) => Some((p.time, p.user.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(after, [(at(1200), "alice@x"), (at(1250), "alice.smith@x")]);
    }

    /// A user renamed after their account was disabled keeps the account's closure: a delete
    /// under the new login opens no second episode (clarification 15), a request under it
    /// is post-disable activity, a joiner under it is the rehire (for both logins), and the
    /// leave after that opens an episode. Also across a checkpoint taken after the rename.
    /// It was two episodes, the second timed from the delete.
    #[test]
    fn a_user_renamed_after_the_disable_keeps_the_account_s_closure() {
        let leaver = |s: &mut Scenario, secs, cid, login| {
            s.idp_naming(
                secs,
                cid,
                Stage::Leaver,
                Some(login),
                Some("u-102"),
                Some(IdpStatus::Success),
            )
            .gateway(secs + 1, cid, WriteKind::Disable, 200);
        };
        let feed = |s: &mut Scenario| {
            leaver(s, 0, "c1", "carl@x");
            s.idp_naming(
                300,
                "c2",
                Stage::Mover,
                Some("zz-carl@x"),
                Some("u-102"),
                Some(IdpStatus::Success),
            )
            .gateway(301, "c2", WriteKind::Update, 200);
            s.engine.advance(at(1700));
            s.outputs.extend(s.engine.drain());
        };
        let rest = |s: &mut Scenario| {
            leaver(s, 1800, "c3", "zz-carl@x");
            s.request(2500, "Zz-Carl@x").request(2550, "carl@x");
            s.idp_naming(
                3000,
                "c4",
                Stage::Joiner,
                Some("zz-carl@x"),
                Some("u-102"),
                Some(IdpStatus::Success),
            )
            .gateway(3001, "c4", WriteKind::CreateUser, 201)
            .request(3100, "zz-carl@x")
            .request(3150, "carl@x");
            leaver(s, 4000, "c5", "zz-carl@x");
            s.finish();
        };
        let mut whole = Scenario::new();
        feed(&mut whole);
        rest(&mut whole);
        let ended: Vec<_> = (whole.episodes().iter())
            .map(|e| {
                (
                    e.user_login.as_deref().unwrap(),
                    e.initiated_at,
                    e.disabled_at,
                )
            })
            .collect();
        assert_eq!(
            ended,
            [
                ("carl@x", at(0), Some(at(1))),
                ("zz-carl@x", at(4000), Some(at(4001)))
            ]
        );
        let after: Vec<_> = (whole.outputs.iter())
            .filter_map(|o| match o {
                Output::PostDisable(p) => Some((p.time, p.user.as_str(), p.disabled_at)),
                _ => None,
            })
            .collect();
        assert_eq!(
            after,
            [(at(2500), "zz-carl@x", at(1)), (at(2550), "carl@x", at(1))]
        );
        let mut restored = Scenario::new();
        feed(&mut restored);
        restored.restart();
        rest(&mut restored);
        assert_eq!(whole.outputs, restored.outputs);
    }

    /// A user disabled, renamed, and enabled again at the source under the new login (Entra
    /// re-enables with an update, no joiner) is live again: the next leave under the new
    /// login opens an episode, with or without the return naming the id. It opened none: the
    /// return found no pair under the new login, and the old closure stood (helper-44).
    #[test]
    fn a_return_under_a_new_login_is_the_renamed_account_s_rehire() {
        for return_id in [Some("u-1"), None] {
            let mut s = Scenario::new();
            s.idp_naming(
                0,
                "c1",
                Stage::Leaver,
                Some("alice@x"),
                Some("u-1"),
                Some(IdpStatus::Success),
            )
            .gateway(1, "c1", WriteKind::Disable, 200)
            .source_event_with_id(600, "bob@x", return_id, None, true)
            .idp_naming(
                5_000,
                "c2",
                Stage::Leaver,
                Some("bob@x"),
                Some("u-1"),
                Some(IdpStatus::Failure),
            )
            .gateway(5_001, "c2", WriteKind::Disable, 503)
            .finish();
            let ended: Vec<_> = (s.episodes().iter())
                .map(|e| (e.user_login.as_deref().unwrap(), e.state))
                .collect();
            use crate::judge::EpisodeState::{Disabled, Open};
            assert_eq!(
                ended,
                [("alice@x", Disabled), ("bob@x", Open)],
                "{return_id:?}"
            );
        }
    }

    /// A user disabled (the first disable refused, the retry under a new login), then
    /// unassigned from the app under the new login: the trigger is the closed account's and
    /// opens nothing. It opened an episode no operation would close, a false breach
    /// (helper-46). An assignment to another app after the disable is no return to this one:
    /// a delete under the new login still opens no second episode (it did, and, refused,
    /// breached: helper-46).
    #[test]
    fn a_renamed_user_s_trigger_or_other_app_s_return_opens_no_second_episode() {
        for event in ["unassign", "assign other app"] {
            let mut s = Scenario::new();
            s.idp_naming(
                0,
                "c1",
                Stage::Leaver,
                Some("alice@x"),
                Some("u-1"),
                Some(IdpStatus::Failure),
            )
            .gateway(1, "c1", WriteKind::Disable, 503)
            .idp_naming(
                60,
                "c2",
                Stage::Leaver,
                Some("bob@x"),
                Some("u-1"),
                Some(IdpStatus::Success),
            )
            .gateway(61, "c2", WriteKind::Disable, 200);
            if event == "unassign" {
                s.source_event_with_id(180, "bob@x", Some("u-1"), Some("aws-prod"), false);
            } else {
                s.source_event_with_id(180, "bob@x", Some("u-1"), Some("slack"), true)
                    .idp_naming(
                        300,
                        "c3",
                        Stage::Leaver,
                        Some("bob@x"),
                        Some("u-1"),
                        Some(IdpStatus::Failure),
                    )
                    .gateway(301, "c3", WriteKind::Disable, 404);
            }
            s.finish();
            let ended: Vec<_> = (s.episodes().iter())
                .map(|e| (e.user_login.as_deref().unwrap(), e.state, e.disabled_at))
                .collect();
            use crate::judge::EpisodeState::Disabled;
            assert_eq!(ended, [("alice@x", Disabled, Some(at(61)))], "{event}");
        }
    }

    /// A renamed user assigned to the app again by a return naming only the new login, then
    /// unassigned: a new episode (the return, with no id to find the account's closure by,
    /// was not kept, and the leave was never watched: helper-47).
    #[test]
    fn a_return_naming_only_the_new_login_makes_the_next_leave_an_episode() {
        let mut s = Scenario::new();
        s.idp_naming(
            0,
            "c1",
            Stage::Leaver,
            Some("alice@x"),
            Some("u-1"),
            Some(IdpStatus::Success),
        )
        .gateway(1, "c1", WriteKind::Disable, 200)
        .idp_naming(
            100,
            "c2",
            Stage::Mover,
            Some("bob@x"),
            Some("u-1"),
            Some(IdpStatus::Success),
        )
        .gateway(101, "c2", WriteKind::Update, 200)
        .source_event_with_id(200, "bob@x", None, Some("aws-prod"), true)
        .source_event_with_id(300, "bob@x", Some("u-1"), Some("aws-prod"), false)
        .finish();
        let ended: Vec<_> = (s.episodes().iter())
            .map(|e| (e.user_login.as_deref().unwrap(), e.state))
            .collect();
        use crate::judge::EpisodeState::{Disabled, Open};
        assert_eq!(ended, [("alice@x", Disabled), ("bob@x", Open)]);
    }

    /// An assignment to the app under the user's new login, while the episode opened under
    /// the old one is open, cancels it as a joiner operation would: it was left open, a
    /// false breach and page (helper-50).
    #[test]
    fn a_return_under_a_new_login_cancels_the_open_episode() {
        let mut s = Scenario::new();
        s.idp_naming(
            0,
            "c1",
            Stage::Leaver,
            Some("alice@x"),
            Some("u-1"),
            Some(IdpStatus::Failure),
        )
        .gateway(1, "c1", WriteKind::Disable, 503)
        .idp_naming(
            120,
            "c2",
            Stage::Mover,
            Some("bob@x"),
            Some("u-1"),
            Some(IdpStatus::Success),
        )
        .gateway(121, "c2", WriteKind::Update, 200)
        .source_event_with_id(180, "bob@x", Some("u-1"), Some("aws-prod"), true)
        .finish();
        let ended: Vec<_> = (s.episodes().iter())
            .map(|e| {
                (
                    e.user_login.as_deref().unwrap(),
                    e.state,
                    e.breached(at(7_200)),
                )
            })
            .collect();
        use crate::judge::EpisodeState::Cancelled;
        assert_eq!(ended, [("alice@x", Cancelled, false)]);
    }

    /// An assignment to the app naming another login of the disabled account (Okta: the
    /// disable names the Okta login, the assignment the app's) is its rehire: the next leave
    /// is an episode, and the user's requests in between are not post-disable activity (the
    /// leave was missed, and the requests flagged: helper-50).
    #[test]
    fn a_return_under_another_login_of_the_account_rehires_it() {
        let mut s = Scenario::new();
        s.idp_naming(
            0,
            "c1",
            Stage::Leaver,
            Some("alice"),
            Some("u-1"),
            Some(IdpStatus::Success),
        )
        .gateway(1, "c1", WriteKind::Disable, 200)
        .source_event_with_id(
            1_800,
            "alice@corp.example",
            Some("u-1"),
            Some("aws-prod"),
            true,
        )
        .request(3_000, "alice")
        .idp_naming(
            86_400,
            "c2",
            Stage::Leaver,
            Some("alice"),
            Some("u-1"),
            Some(IdpStatus::Failure),
        )
        .gateway(86_401, "c2", WriteKind::Disable, 503)
        .finish();
        let episodes: Vec<_> = (s.episodes().iter())
            .map(|e| (e.user_login.as_deref().unwrap(), e.state))
            .collect();
        use crate::judge::EpisodeState::{Disabled, Open};
        assert_eq!(episodes, [("alice", Disabled), ("alice", Open)]);
        let flagged = (s.outputs.iter()).filter(|o| matches!(o, Output::PostDisable(_)));
        assert_eq!(flagged.count(), 0);
    }

    /// A closed pair re-keyed from the user id to the login (a later operation names both)
    /// keeps its place in the index by id: a leave under another login with the same id then
    /// opens no episode (clarification 15), in a live run as in a restored one (the live
    /// index named the old key, and found nothing: helper-44).
    #[test]
    fn a_closed_pair_re_keyed_to_its_login_stays_found_by_id() {
        let feed = |s: &mut Scenario| {
            s.idp_naming(
                0,
                "c1",
                Stage::Leaver,
                None,
                Some("u-1"),
                Some(IdpStatus::Success),
            )
            .gateway(1, "c1", WriteKind::Disable, 200)
            .idp_naming(
                700,
                "c2",
                Stage::Leaver,
                Some("alice@x"),
                Some("u-1"),
                Some(IdpStatus::Success),
            )
            .gateway(701, "c2", WriteKind::DeleteUser, 204);
            s.engine.advance(at(2_000));
            s.outputs.extend(s.engine.drain());
        };
        let rest = |s: &mut Scenario| {
            s.idp_naming(
                3_000,
                "c3",
                Stage::Leaver,
                Some("bob@x"),
                Some("u-1"),
                Some(IdpStatus::Failure),
            )
            .gateway(3_001, "c3", WriteKind::Disable, 503)
            .finish();
        };
        let mut whole = Scenario::new();
        feed(&mut whole);
        rest(&mut whole);
        assert_eq!(whole.episodes().len(), 1, "{:?}", whole.episodes());
        let mut restored = Scenario::new();
        feed(&mut restored);
        restored.restart();
        rest(&mut restored);
        assert_eq!(whole.outputs, restored.outputs);
    }

    /// A joiner under the login a user was renamed to while leaving cancels the episode open
    /// under the old login, as a joiner under the same login does (clarification 15).
    #[test]
    fn a_joiner_under_a_new_login_cancels_the_episode_open_under_the_old() {
        let mut s = Scenario::new();
        s.idp_naming(
            0,
            "c1",
            Stage::Leaver,
            Some("alice@x"),
            Some("u-100"),
            Some(IdpStatus::Failure),
        )
        .gateway(1, "c1", WriteKind::Disable, 503)
        .idp_naming(
            100,
            "c2",
            Stage::Joiner,
            Some("alice.smith@x"),
            Some("u-100"),
            Some(IdpStatus::Success),
        )
        .gateway(101, "c2", WriteKind::CreateUser, 201)
        .finish();
        let ended: Vec<_> = (s.episodes().iter())
            .map(|e| (e.user_login.as_deref().unwrap(), e.state))
            .collect();
        assert_eq!(ended, [("alice@x", crate::judge::EpisodeState::Cancelled)]);
    }

    /// Two open episodes of one app under one user id (an app trigger naming another login
    /// and no id, then a leaver naming that login and the id): the index by id follows
    /// both, and the one left is found by id once the other ends (it named the later one,
    /// and lost both when that one ended). (A trigger naming the id finds the open episode
    /// by it since helper-46's review, and opens none.)
    #[test]
    fn the_index_by_user_id_follows_two_open_episodes_sharing_an_id() {
        let mut s = Scenario::new();
        s.idp_naming(
            0,
            "c1",
            Stage::Leaver,
            Some("alice@x"),
            Some("u-7"),
            Some(IdpStatus::Failure),
        )
        .gateway(1, "c1", WriteKind::Disable, 404)
        .source_event_with_id(10, "zed@x", None, Some("aws-prod"), false)
        .idp_naming(
            12,
            "c1b",
            Stage::Leaver,
            Some("zed@x"),
            Some("u-7"),
            Some(IdpStatus::Failure),
        )
        .gateway(13, "c1b", WriteKind::Disable, 404)
        .idp(20, "c2", Stage::Joiner, "zed@x", Some(IdpStatus::Success))
        .gateway(21, "c2", WriteKind::CreateUser, 201)
        .idp_naming(
            30,
            "c3",
            Stage::Leaver,
            Some("new@x"),
            Some("u-7"),
            Some(IdpStatus::Success),
        )
        .gateway(31, "c3", WriteKind::Disable, 200)
        .finish();
        let ended: Vec<_> = s
            .episodes()
            .iter()
            .map(|e| (e.user_login.clone().unwrap_or_default(), e.state))
            .collect();
        use crate::judge::EpisodeState::{Cancelled, Disabled};
        assert_eq!(
            ended,
            [
                ("zed@x".to_string(), Cancelled),
                ("alice@x".to_string(), Disabled)
            ]
        );
    }

    /// An episode whose disable has been seen is not dropped by the memory cap while it waits
    /// for its 2xx's turn, and a disable of an episode a rehire cancelled closes no later one.
    #[test]
    fn a_waiting_disable_is_not_evicted_and_closes_only_its_own_episode() {
        let mut s = Scenario::new();
        s.idp(0, "cA", Stage::Leaver, "a@x", Some(IdpStatus::Success))
            .gateway(1, "cA", WriteKind::Disable, 503)
            .gateway(480, "cA", WriteKind::Disable, 200)
            .idp(100, "cC", Stage::Mover, "b@x", Some(IdpStatus::Success))
            .gateway(1000, "cC", WriteKind::Update, 200);
        s.engine.advance(at(480 + 661));
        assert_eq!(s.engine.open_episodes().len(), 0);
        assert_eq!(s.engine.episodes.evict_oldest_open(), None);
        s.finish();
        let disabled: Vec<_> = s.episodes().iter().map(|e| e.disabled_at).collect();
        assert_eq!(disabled, [Some(at(480))]);
        // A rehire at 200 (before A's 2xx) cancels A's episode; a leaver at 300 refused
        // with 404 opens another, which A's 2xx at 480 does not close.
        let mut s = Scenario::new();
        s.idp(0, "cA", Stage::Leaver, "a@x", Some(IdpStatus::Success))
            .gateway(1, "cA", WriteKind::Disable, 503)
            .gateway(480, "cA", WriteKind::Disable, 200)
            .idp(200, "cJ", Stage::Joiner, "a@x", Some(IdpStatus::Success))
            .gateway(201, "cJ", WriteKind::CreateUser, 201)
            .idp(300, "cL", Stage::Leaver, "a@x", Some(IdpStatus::Failure))
            .gateway(301, "cL", WriteKind::Disable, 404)
            .finish();
        let states: Vec<_> = s
            .episodes()
            .iter()
            .map(|e| (e.initiated_at, e.state))
            .collect();
        use crate::judge::EpisodeState::{Cancelled, Open};
        assert_eq!(states, [(at(0), Cancelled), (at(300), Open)]);
    }

    /// A login handed on to another account (a contractor's login kept by the employee, a
    /// departed user's reused): the new account, created just before the old one is
    /// disabled, has another user id, and its own leave months later opens its own episode.
    /// It opened none (the pair was disabled with no rehire since): no row, no page.
    #[test]
    fn a_leave_of_another_account_under_a_disabled_login_opens_its_episode() {
        let mut s = Scenario::new();
        s.idp_naming(
            0,
            "new",
            Stage::Joiner,
            Some("noah@x"),
            Some("u-2"),
            Some(IdpStatus::Success),
        )
        .gateway(1, "new", WriteKind::CreateUser, 201)
        .idp_naming(
            20,
            "old",
            Stage::Leaver,
            Some("noah@x"),
            Some("u-1"),
            Some(IdpStatus::Success),
        )
        .gateway(21, "old", WriteKind::Disable, 200)
        // The same account's delete after its disable opens nothing (clarification 15).
        .idp_naming(
            100,
            "old-delete",
            Stage::Leaver,
            Some("noah@x"),
            Some("U-1"),
            Some(IdpStatus::Success),
        )
        .gateway(101, "old-delete", WriteKind::DeleteUser, 204)
        .idp_naming(
            90_000,
            "leave",
            Stage::Leaver,
            Some("noah@x"),
            Some("u-2"),
            Some(IdpStatus::Failure),
        )
        .gateway(90_001, "leave", WriteKind::Disable, 503)
        .finish();
        let episodes: Vec<_> = s
            .episodes()
            .iter()
            .map(|e| {
                (
                    e.user_id.clone().unwrap_or_default(),
                    e.initiated_at,
                    e.state,
                )
            })
            .collect();
        use crate::judge::EpisodeState::{Disabled, Open};
        assert_eq!(
            episodes,
            [
                ("u-1".to_string(), at(20), Disabled),
                ("u-2".to_string(), at(90_000), Open)
            ]
        );
    }

    /// The account a disabled pair is kept for is the disabling operation's user id, not the
    /// trigger's that opened the episode (an HR feed's employee number): the same account's
    /// delete after its disable opens no episode.
    #[test]
    fn a_trigger_s_own_user_id_does_not_make_another_account() {
        let mut s = Scenario::new();
        s.source_event_with_id(0, "ann@x", Some("E123"), Some("aws-prod"), false)
            .idp_naming(
                10,
                "off",
                Stage::Leaver,
                Some("ann@x"),
                Some("00u1"),
                Some(IdpStatus::Success),
            )
            .gateway(11, "off", WriteKind::Disable, 200)
            .idp_naming(
                100,
                "delete",
                Stage::Leaver,
                Some("ann@x"),
                Some("00u1"),
                Some(IdpStatus::Failure),
            )
            .gateway(101, "delete", WriteKind::DeleteUser, 404)
            .finish();
        let states: Vec<_> = s.episodes().iter().map(|e| e.state).collect();
        assert_eq!(states, [crate::judge::EpisodeState::Disabled]);
    }

    /// The index of open episodes follows each way in and out: opened and left open (a 404),
    /// closed later by another leaver operation, opened and closed by one operation.
    #[test]
    fn the_open_index_follows_episodes_closed_by_a_later_operation_or_at_once() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Leaver, "a@x", Some(IdpStatus::Failure))
            .gateway(1, "c1", WriteKind::Disable, 404);
        s.engine.advance(at(2000));
        s.engine.episodes.assert_open_index();
        assert_eq!(s.engine.open_episode_count(), 1, "the 404 leaves it open");
        s.idp(2100, "c2", Stage::Leaver, "a@x", Some(IdpStatus::Success))
            .gateway(2101, "c2", WriteKind::Disable, 200)
            .idp(2102, "c3", Stage::Leaver, "b@x", Some(IdpStatus::Success))
            .gateway(2103, "c3", WriteKind::Disable, 200);
        s.engine.advance(at(4000));
        s.engine.episodes.assert_open_index();
        assert_eq!(s.engine.open_episode_count(), 0, "both disabled");
        s.outputs.extend(s.engine.drain());
        s.finish();
        let states: Vec<_> = s.episodes().iter().map(|e| (e.user(), e.state)).collect();
        assert_eq!(
            states,
            [
                ("a@x", crate::judge::EpisodeState::Disabled),
                ("b@x", crate::judge::EpisodeState::Disabled)
            ]
        );
    }

    #[test]
    fn finishing_in_steps_gives_the_outputs_of_finishing_at_once_in_the_same_order() {
        // Pending at the end: joiners, a leaver disabled, one left open (a 404) with a
        // trigger, and one whose account is then used: operations, episodes and a
        // post-disable request all come out of the finish.
        let pending = |s: &mut Scenario| {
            for (i, user) in ["a@x", "b@x", "c@x", "d@x", "e@x"].iter().enumerate() {
                let (t, cid) = (i as i64 * 10, format!("j{i}"));
                s.idp(t, &cid, Stage::Joiner, user, Some(IdpStatus::Success))
                    .gateway(t + 1, &cid, WriteKind::CreateUser, 201);
            }
            s.trigger(100, "a@x")
                .idp(101, "l1", Stage::Leaver, "a@x", Some(IdpStatus::Success))
                .gateway(102, "l1", WriteKind::Disable, 404)
                .idp(110, "l2", Stage::Leaver, "b@x", Some(IdpStatus::Success))
                .gateway(111, "l2", WriteKind::Disable, 200)
                .request(150, "b@x");
        };
        let mut at_once = Scenario::new();
        pending(&mut at_once);
        at_once.finish();
        let mut stepped = Scenario::new();
        pending(&mut stepped);
        let (mut outputs, mut steps_with_outputs) = (Vec::new(), 0);
        stepped
            .engine
            .finish_in_steps(2, |engine| {
                let before = outputs.len();
                outputs.extend(engine.drain());
                steps_with_outputs += usize::from(outputs.len() > before);
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(outputs, at_once.outputs);
        let kinds = |o: &Output| std::mem::discriminant(o);
        let distinct: std::collections::HashSet<_> = outputs.iter().map(kinds).collect();
        assert_eq!(
            distinct.len(),
            3,
            "operations, episodes and activity: {outputs:?}"
        );
        assert!(steps_with_outputs >= 4, "{steps_with_outputs} steps");
        // An error in a step stops the finish and is returned.
        let mut failing = Scenario::new();
        pending(&mut failing);
        assert_eq!(
            failing.engine.finish_in_steps(2, |_| Err("sink")),
            Err("sink")
        );
    }

    #[test]
    fn a_rehire_while_the_episode_is_open_cancels_it_without_a_breach() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Leaver, "a@x", Some(IdpStatus::Success))
            .gateway(1, "c1", WriteKind::Disable, 500)
            .idp(3000, "c2", Stage::Joiner, "a@x", Some(IdpStatus::Success))
            .gateway(3001, "c2", WriteKind::CreateUser, 201)
            .finish();
        let episodes = s.episodes();
        assert_eq!(episodes.len(), 1);
        assert_eq!(episodes[0].state, crate::judge::EpisodeState::Cancelled);
        assert!(!episodes[0].breached(at(100_000)));
    }

    #[test]
    fn a_second_leaver_without_a_rehire_does_not_open_a_new_episode() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Leaver, "a@x", None)
            .gateway(1, "c1", WriteKind::Disable, 200)
            .idp(2000, "c2", Stage::Leaver, "a@x", None)
            .gateway(2001, "c2", WriteKind::DeleteUser, 500)
            .finish();
        assert_eq!(s.episodes().len(), 1);
        assert_eq!(s.engine.open_episodes().len(), 0);
    }

    #[test]
    fn a_rehire_after_a_disable_lets_the_next_leaver_start_afresh() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Leaver, "a@x", None)
            .gateway(1, "c1", WriteKind::Disable, 200)
            .idp(2000, "c2", Stage::Joiner, "a@x", None)
            .gateway(2001, "c2", WriteKind::CreateUser, 201)
            .idp(5000, "c3", Stage::Leaver, "a@x", None)
            .gateway(5010, "c3", WriteKind::Disable, 200)
            .finish();
        let episodes = s.episodes();
        assert_eq!(episodes.len(), 2);
        assert_eq!(episodes[1].initiated_at, at(5000));
        assert_eq!(episodes[1].latency_seconds(), Some(10.0));
    }

    #[test]
    fn an_app_less_trigger_starts_the_clock_of_the_users_leaver_in_any_app() {
        let mut s = Scenario::new();
        s.trigger(0, "A@X")
            .idp(2400, "c1", Stage::Leaver, "a@x", None)
            .gateway(2402, "c1", WriteKind::Disable, 204)
            .finish();
        let episode = s.episodes()[0];
        assert_eq!(episode.initiated_at, at(0));
        assert_eq!(episode.latency_seconds(), Some(2402.0));
        assert!(episode.high_risk);
        assert!(
            episode.breached(at(2402)),
            "40 minutes of sync lag breaks a 15-minute deadline"
        );
    }

    /// A disable undone at the source within one provisioning cycle sends no SCIM call; its
    /// trigger must not start the clock of the user's real leave months later.
    #[test]
    fn a_disable_undone_at_the_source_starts_no_later_clock() {
        let months = 90 * 86_400;
        let mut s = Scenario::new();
        s.trigger(0, "a@x")
            .source_event(300, "A@X", None, true)
            .idp(months, "c1", Stage::Leaver, "a@x", None)
            .gateway(months + 2, "c1", WriteKind::Disable, 204)
            .finish();
        let episode = s.episodes()[0];
        assert_eq!(
            episode.initiated_at,
            at(months),
            "not the undone trigger's time"
        );
        assert_eq!(episode.latency_seconds(), Some(2.0));
        assert!(!episode.breached(at(months + 2)));
        // A return only drops the triggers before it: a disable after it still counts.
        let mut s = Scenario::new();
        s.source_event(0, "a@x", None, true)
            .trigger(10, "a@x")
            .idp(2400, "c1", Stage::Leaver, "a@x", None)
            .gateway(2402, "c1", WriteKind::Disable, 204)
            .finish();
        assert_eq!(s.episodes()[0].initiated_at, at(10));
    }

    /// The user enabled again at the source while a disable is still failing: the episode
    /// the source's trigger started is cancelled (no breach, no overdue page), one the IdP
    /// started by itself (an unassignment) is not; with an app, that pair's episode is.
    #[test]
    fn a_return_at_the_source_cancels_the_clocks_it_started() {
        let mut s = Scenario::new();
        s.trigger(0, "a@x")
            .idp(2400, "c1", Stage::Leaver, "a@x", None)
            .gateway(2402, "c1", WriteKind::Disable, 500)
            .idp(2500, "c2", Stage::Leaver, "b@x", None)
            .gateway(2502, "c2", WriteKind::Disable, 500)
            .source_event(0, "c@x", Some("aws-prod"), false)
            .source_event(3000, "a@x", None, true)
            .source_event(3000, "b@x", None, true)
            .source_event(3100, "c@x", Some("aws-prod"), true)
            .finish();
        let state = |user: &str| {
            let episodes = s.episodes();
            let episode = episodes
                .iter()
                .find(|e| e.user_login.as_deref() == Some(user))
                .unwrap();
            (episode.state, episode.breached(at(100_000)))
        };
        assert_eq!(state("a@x"), (crate::judge::EpisodeState::Cancelled, false));
        assert_eq!(
            state("b@x"),
            (crate::judge::EpisodeState::Open, true),
            "the IdP's own leaver"
        );
        assert_eq!(state("c@x"), (crate::judge::EpisodeState::Cancelled, false));
    }

    /// Okta: the app's operations name the user by the app's login (`rodun`), the lifecycle
    /// events by the Okta login; both carry the Okta user id. The reactivation cancels the
    /// episode the deactivation started through the id.
    #[test]
    fn a_return_finds_the_episode_by_either_of_the_user_s_keys() {
        let mut s = Scenario::new();
        s.source_event_with_id(0, "rita@corp.example", Some("00u1"), None, false);
        let origin = s.origin(0);
        s.engine.ingest(Record::Idp(IdpRecord {
            time: at(2400),
            correlation_id: Some("c1".into()),
            operation_id: None,
            action: "deactivate".into(),
            stage: Stage::Leaver,
            app: Some("aws-prod".into()),
            user_id: Some("00u1".into()),
            user_login: Some("rodun".into()),
            target_id: None,
            status: None,
            error: None,
            trigger_time: None,
            groups: vec![],
            origin,
        }));
        s.gateway(2402, "c1", WriteKind::Disable, 500)
            .source_event_with_id(3000, "rita@corp.example", Some("00u1"), None, true)
            .finish();
        let episode = s.episodes()[0];
        assert_eq!(episode.initiated_at, at(0), "started by the deactivation");
        assert_eq!(episode.state, crate::judge::EpisodeState::Cancelled);
    }

    /// A user disabled, then enabled again at the source (a leave of absence): Entra
    /// re-enables the app's account with an `update`, no joiner. The return is the rehire:
    /// requests after it are not post-disable activity, and the next leave opens an episode.
    #[test]
    fn a_return_after_a_disable_is_a_rehire() {
        let later = 90 * 86_400;
        let run = |with_return: bool| {
            let mut s = Scenario::new();
            s.trigger(0, "a@x")
                .idp(100, "c1", Stage::Leaver, "a@x", None)
                .gateway(101, "c1", WriteKind::Disable, 204)
                .request(500, "a@x");
            if with_return {
                s.source_event(1000, "a@x", None, true);
            }
            s.request(1500, "a@x")
                .trigger(later, "a@x")
                .idp(later + 60, "c2", Stage::Leaver, "a@x", None)
                .gateway(later + 61, "c2", WriteKind::Disable, 204)
                .finish();
            let post_disable = s
                .outputs
                .iter()
                .filter(|o| matches!(o, Output::PostDisable(_)))
                .count();
            let episodes: Vec<Ts> = s.episodes().iter().map(|e| e.initiated_at).collect();
            (post_disable, episodes)
        };
        assert_eq!(run(true), (1, vec![at(0), at(later)]));
        // Without it, as before: the request after the re-enable is post-disable activity and
        // the second leave is never measured.
        assert_eq!(run(false), (2, vec![at(0)]));
    }

    /// A return undoes only what the source did: not an IdP's own leaver (b) or an
    /// unassignment from the app (c), whose requests after it are still post-disable
    /// activity; and one logged late, older than the episode, cancels nothing (d).
    #[test]
    fn a_return_undoes_only_what_the_source_did() {
        let mut s = Scenario::new();
        s.idp(100, "c1", Stage::Leaver, "b@x", None)
            .gateway(101, "c1", WriteKind::Disable, 204)
            .source_event(0, "c@x", Some("aws-prod"), false)
            .idp(100, "c2", Stage::Leaver, "c@x", None)
            .gateway(101, "c2", WriteKind::Disable, 204)
            .source_event(1000, "b@x", None, true)
            .source_event(1000, "c@x", None, true)
            .request(1500, "b@x")
            .request(1500, "c@x")
            .source_event(2000, "d@x", Some("aws-prod"), false)
            .source_event(1000, "d@x", Some("aws-prod"), true)
            .finish();
        let flagged: Vec<&str> = s
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::PostDisable(p) => Some(p.user.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(flagged, ["b@x", "c@x"]);
        let d = s
            .episodes()
            .into_iter()
            .find(|e| e.user() == "d@x")
            .unwrap();
        assert_eq!(d.state, crate::judge::EpisodeState::Open);
    }

    /// A return waiting in the timeline holds the daemon's overdue page of the episodes it
    /// may cancel (from its time), as a disable on its way does.
    #[test]
    fn a_return_not_yet_seen_may_still_end_an_episode() {
        let mut s = Scenario::new();
        s.source_event(0, "c@x", Some("aws-prod"), false)
            .source_event(0, "d@x", Some("aws-prod"), false)
            .source_event(600, "c@x", Some("aws-prod"), true)
            .source_event(650, "E@x", None, true);
        s.engine.advance(at(1000));
        assert_eq!(s.engine.open_episodes().len(), 2, "both triggers seen");
        let pairs = [
            ("aws-prod".to_string(), "c@x".to_string()),
            ("aws-prod".to_string(), "d@x".to_string()),
            ("aws-prod".to_string(), "e@x".to_string()),
        ];
        assert_eq!(
            s.engine.unseen_leavers(&pairs),
            [Some(at(600)), None, Some(at(650))]
        );
    }

    #[test]
    fn the_idp_word_is_its_latest_record_and_a_missing_status_is_no_claim() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Mover, "a@x", Some(IdpStatus::Failure))
            .idp(30, "c1", Stage::Mover, "a@x", Some(IdpStatus::Success))
            .gateway(31, "c1", WriteKind::Update, 200)
            .idp(100, "c2", Stage::Mover, "b@x", None)
            .gateway(101, "c2", WriteKind::Update, 500)
            .finish();
        let ops = s.operations();
        assert_eq!(ops[0].idp_status, Some(IdpStatus::Success));
        assert!(!ops[0].disagreement);
        assert_eq!(
            ops[0].time,
            at(0),
            "the operation's time is its earliest record"
        );
        assert!(!ops[1].disagreement, "no status, no claim, no disagreement");
        assert_eq!(ops[1].outcome, Outcome::Failed);
    }

    #[test]
    fn two_patches_to_one_user_within_the_window_go_to_the_nearest_operation() {
        let mut s = Scenario::new();
        s.idp_own_id(0, "change-1", Stage::Mover, "u-1")
            .idp_own_id(60, "change-2", Stage::Mover, "u-1")
            .write_to(62, "u-1", WriteKind::Update, 500)
            .write_to(2, "u-1", WriteKind::Update, 200)
            .finish();
        let ops = s.operations();
        let by_id = |id: &str| {
            ops.iter()
                .find(|o| o.correlation_id.as_deref() == Some(id))
                .copied()
                .unwrap()
        };
        assert_eq!(by_id("change-1").outcome, Outcome::Succeeded);
        assert_eq!(by_id("change-1").attempts.len(), 1);
        assert_eq!(by_id("change-2").outcome, Outcome::Failed);
        assert_eq!(
            by_id("change-2").join_method,
            crate::join::JoinMethod::ResourceId
        );
        assert_eq!(
            s.engine.join_stats().ambiguous,
            2,
            "each write had two candidates"
        );
    }

    #[test]
    fn a_write_of_the_wrong_kind_is_not_joined_without_a_shared_id() {
        let mut s = Scenario::new();
        s.idp_own_id(0, "change-1", Stage::Leaver, "u-1")
            .write_to(1, "u-1", WriteKind::Update, 200)
            .finish();
        let outcomes: Vec<Outcome> = s.operations().iter().map(|o| o.outcome).collect();
        assert_eq!(
            outcomes,
            [Outcome::Unconfirmed, Outcome::Unattributed],
            "a leaver needs a disable or delete"
        );
    }

    #[test]
    fn nothing_settles_before_the_window_and_lateness_have_passed() {
        let mut s = Scenario::new();
        s.idp(0, "c1", Stage::Joiner, "a@x", Some(IdpStatus::Success));
        s.engine.advance(at(600 + 60));
        assert_eq!(s.engine.drain().count(), 0);
        s.engine.advance(at(600 + 60 + 1));
        let settled: Vec<Output> = s.engine.drain().collect();
        assert!(matches!(&settled[0], Output::Operation(op) if op.outcome == Outcome::Unconfirmed));
    }
}
