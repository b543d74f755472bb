//! Leaver episodes: from "this person must lose access to this app" to "the target answered
//! 2xx to a disable", across retries and correlation IDs (design.md "Leaver episode",
//! clarifications 11–16), and requests made as a user after their account was disabled.
//!
//! Everything here is called in event-time order by the engine's timeline, so a rehire, a
//! trigger and a leaver are seen in the order they happened, not the order they were logged.

use super::operation::Operation;
use super::policy::{Decided, Policy, Subject};
use crate::model::{fold_case, FastMap, Texts};
use crate::model::{Outcome, Stage};
use crate::time::Ts;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

/// Where an episode stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeState {
    /// Not yet disabled.
    Open,
    /// The target answered 2xx to a disable or delete.
    Disabled,
    /// A joiner for the pair arrived while it was open (clarification 15): no latency, no breach.
    Cancelled,
}

/// One leaver episode of an (app, user) pair: a row of the `leavers` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub app: String,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    pub initiated_at: Ts,
    pub first_attempt_at: Option<Ts>,
    pub disabled_at: Option<Ts>,
    pub high_risk: bool,
    pub deadline_seconds: u64,
    pub correlation_ids: Vec<String>,
    pub state: EpisodeState,
    /// What started the clock: the trigger event, else the first leaver operation's action.
    pub initiated_by: String,
    /// [`Episode::user`] as the episode opened: a name its alert keeps when a later record
    /// adds the login (the page's dedup key changed, and the first page was resolved while
    /// the account was still live). Empty in checkpoints from before it was kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub known_as: String,
    /// Its clock is an app-less trigger's (the user disabled at the source of truth): the
    /// user enabled again there cancels it, or ends its disable. False in checkpoints from
    /// before it was kept (such an episode is left to the IdP's operations).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_source: bool,
    /// What started the clock, for the evidence ([`Episode::clock_start`]). Unknown (`None`)
    /// in checkpoints from before it was kept, and for an episode carried over from a store
    /// row of schema version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<ClockStart>,
    /// The correlation ID of the operation whose 2xx disabled it (none when that operation
    /// had no ID, and while open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_by: Option<String>,
    /// What the high-risk policy decided `high_risk` and `deadline_seconds` on, so that a
    /// restart with a changed policy decides again for the episodes still open, as a replay
    /// of the same logs with it would. `None` in checkpoints from before it was kept (such
    /// an episode keeps its decision), and for an episode carried over from a store row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_on: Option<Box<Decided>>,
}

/// What started a leaver episode's clock: the `leavers` table's `clock_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStart {
    /// The first leaver operation's IdP record.
    Operation,
    /// The trigger time an IdP record carries (a `trigger_time` field).
    TriggerTime,
    /// A trigger source's event naming the app.
    AppTrigger,
    /// A trigger source's event naming no app: the user disabled at the source of truth,
    /// which times every app the user leaves.
    UserTrigger,
}

impl ClockStart {
    pub const ALL: [ClockStart; 4] = [
        ClockStart::Operation,
        ClockStart::TriggerTime,
        ClockStart::AppTrigger,
        ClockStart::UserTrigger,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ClockStart::Operation => "operation",
            ClockStart::TriggerTime => "trigger_time",
            ClockStart::AppTrigger => "app_trigger",
            ClockStart::UserTrigger => "user_trigger",
        }
    }
    pub fn parse(text: &str) -> Option<ClockStart> {
        ClockStart::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl Episode {
    /// `disabled_at − initiated_at` (never negative: a gateway may log before the IdP).
    pub fn latency_seconds(&self) -> Option<f64> {
        self.disabled_at
            .map(|d| d.secs_since(self.initiated_at).max(0.0))
    }
    /// What started the clock, where known. An episode from a checkpoint older than
    /// [`Episode::started_by`] knows only whether a user trigger did.
    pub fn clock_start(&self) -> Option<ClockStart> {
        if self.by_source {
            Some(ClockStart::UserTrigger)
        } else {
            self.started_by
        }
    }
    /// Breach: latency over the deadline, or still open at `as_of` past it.
    pub fn breached(&self, as_of: Ts) -> bool {
        let deadline = self.deadline_seconds as f64;
        match self.state {
            EpisodeState::Disabled => self.latency_seconds().is_some_and(|l| l > deadline),
            EpisodeState::Open => as_of.secs_since(self.initiated_at) > deadline,
            EpisodeState::Cancelled => false,
        }
    }
    /// When the deadline passes.
    pub fn due_at(&self) -> Ts {
        self.initiated_at.plus_secs(self.deadline_seconds)
    }
    /// The login when known, else the id (clarification 12).
    pub fn user(&self) -> &str {
        self.user_login
            .as_deref()
            .or(self.user_id.as_deref())
            .unwrap_or("")
    }
    /// Who the episode's alert is about, for its whole life: [`Episode::user`] as it opened.
    pub fn alert_user(&self) -> &str {
        if self.known_as.is_empty() {
            self.user()
        } else {
            &self.known_as
        }
    }
}

/// A request made as a user after their account was disabled in that app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostDisableActivity {
    pub app: String,
    pub user: String,
    pub user_id: Option<String>,
    pub time: Ts,
    pub correlation_id: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub disabled_at: Ts,
}

/// What the timeline feeds in for lifecycle purposes: the parts of an operation that matter,
/// its text in one allocation ([`Texts`]). Checkpoints hold it as [`LifecycleOpFields`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "LifecycleOpFields", into = "LifecycleOpFields")]
pub struct LifecycleOp {
    pub stage: Stage,
    pub outcome: Outcome,
    pub time: Ts,
    pub trigger_time: Option<Ts>,
    pub first_attempt_time: Option<Ts>,
    pub first_success: Option<Ts>,
    pub groups: Vec<String>,
    /// The app, user ID, user login, action and correlation ID.
    texts: Texts<5>,
}

/// A [`LifecycleOp`]'s fields, each its own: how checkpoints hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleOpFields {
    pub stage: Stage,
    pub outcome: Outcome,
    pub time: Ts,
    pub app: Option<String>,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    pub action: String,
    pub correlation_id: Option<String>,
    pub trigger_time: Option<Ts>,
    pub first_attempt_time: Option<Ts>,
    pub first_success: Option<Ts>,
    pub groups: Vec<String>,
}

impl LifecycleOp {
    /// Asks the cache for its text (it waits on the timeline long enough to leave it).
    pub fn prefetch(&self) {
        self.texts.prefetch();
    }

    /// The lifecycle parts of a judged operation.
    pub fn of(operation: &Operation) -> LifecycleOp {
        LifecycleOp {
            stage: operation.stage,
            outcome: operation.outcome,
            time: operation.time,
            trigger_time: operation.trigger_time,
            first_attempt_time: operation.first_attempt_time,
            first_success: operation.first_success(),
            groups: operation.groups.clone(),
            texts: LifecycleOp::texts(
                operation.app.as_deref(),
                operation.user_id.as_deref(),
                operation.user_login.as_deref(),
                operation.action.as_deref().unwrap_or_default(),
                operation.correlation_id.as_deref(),
            ),
        }
    }

    /// The text parts in the order the accessors read them.
    fn texts(
        app: Option<&str>,
        user_id: Option<&str>,
        user_login: Option<&str>,
        action: &str,
        correlation_id: Option<&str>,
    ) -> Texts<5> {
        Texts::new([app, user_id, user_login, Some(action), correlation_id])
    }

    pub fn app(&self) -> Option<&str> {
        self.texts.get(0)
    }

    pub fn user_id(&self) -> Option<&str> {
        self.texts.get(1)
    }

    pub fn user_login(&self) -> Option<&str> {
        self.texts.get(2)
    }

    pub fn action(&self) -> &str {
        self.texts.get(3).unwrap_or_default()
    }

    pub fn correlation_id(&self) -> Option<&str> {
        self.texts.get(4)
    }
}

impl From<LifecycleOpFields> for LifecycleOp {
    fn from(f: LifecycleOpFields) -> LifecycleOp {
        LifecycleOp {
            stage: f.stage,
            outcome: f.outcome,
            time: f.time,
            trigger_time: f.trigger_time,
            first_attempt_time: f.first_attempt_time,
            first_success: f.first_success,
            groups: f.groups,
            texts: LifecycleOp::texts(
                f.app.as_deref(),
                f.user_id.as_deref(),
                f.user_login.as_deref(),
                &f.action,
                f.correlation_id.as_deref(),
            ),
        }
    }
}

impl From<LifecycleOp> for LifecycleOpFields {
    fn from(op: LifecycleOp) -> LifecycleOpFields {
        let owned = |text: Option<&str>| text.map(str::to_string);
        LifecycleOpFields {
            stage: op.stage,
            outcome: op.outcome,
            time: op.time,
            app: owned(op.app()),
            user_id: owned(op.user_id()),
            user_login: owned(op.user_login()),
            action: op.action().to_string(),
            correlation_id: owned(op.correlation_id()),
            trigger_time: op.trigger_time,
            first_attempt_time: op.first_attempt_time,
            first_success: op.first_success,
            groups: op.groups,
        }
    }
}

/// Ends a pair's open episode as cancelled (no latency, no breach), out of the open index:
/// whether it had one. A disable of it waiting for its 2xx's turn no longer closes anything.
fn cancel_open(
    pairs: &mut PairMap,
    key: &(String, String),
    open: &mut OpenIndex,
    out: &mut Vec<LeaverEvent>,
) -> bool {
    let Some(pair) = pairs.get_mut(key) else {
        return false;
    };
    let Some(mut episode) = pair.open.take() else {
        return false;
    };
    pair.closing = None;
    episode.state = EpisodeState::Cancelled;
    open.remove(key, &episode, pairs);
    out.push(LeaverEvent::Ended(*episode));
    true
}

/// Every (app, user) pair that ever had a leaver, by (app, folded user key).
type PairMap = hashbrown::HashMap<(String, String), Pair, ahash::RandomState>;

/// What an episode's `initiated_by` says when an app-less trigger started its clock.
const APP_LESS_TRIGGER: &str = "trigger";

/// A lifecycle trigger at the source of truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub time: Ts,
    pub app: Option<String>,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    pub event: String,
    pub groups: Vec<String>,
    /// The user enabled or assigned again at the source of truth (see
    /// [`Episodes::on_trigger`]). Absent from checkpoints written before it existed.
    #[serde(default)]
    pub returns: bool,
}

/// A gateway request authenticated as someone. Every such request waits on the timeline for
/// a window or two, so its text is one allocation ([`Texts`]). Checkpoints hold it as
/// [`RequestFields`], as before it was packed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RequestFields", into = "RequestFields")]
pub struct Request {
    pub time: Ts,
    pub method: crate::model::Method,
    pub status: u16,
    /// The principal, path, app and correlation ID.
    texts: Texts<4>,
}

/// A [`Request`]'s fields, each its own: how checkpoints hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFields {
    pub time: Ts,
    pub principal: String,
    pub app: Option<String>,
    pub correlation_id: Option<String>,
    pub method: crate::model::Method,
    pub path: String,
    pub status: u16,
}

impl Request {
    /// Asks the cache for its text (it waits on the timeline long enough to leave it).
    pub fn prefetch(&self) {
        self.texts.prefetch();
    }

    pub fn new(
        time: Ts,
        principal: &str,
        app: Option<&str>,
        correlation_id: Option<&str>,
        method: crate::model::Method,
        path: &str,
        status: u16,
    ) -> Request {
        Request {
            time,
            method,
            status,
            texts: Texts::new([Some(principal), Some(path), app, correlation_id]),
        }
    }

    pub fn principal(&self) -> &str {
        self.texts.get(0).unwrap_or_default()
    }

    pub fn path(&self) -> &str {
        self.texts.get(1).unwrap_or_default()
    }

    pub fn app(&self) -> Option<&str> {
        self.texts.get(2)
    }

    pub fn correlation_id(&self) -> Option<&str> {
        self.texts.get(3)
    }
}

impl From<RequestFields> for Request {
    fn from(f: RequestFields) -> Request {
        Request::new(
            f.time,
            &f.principal,
            f.app.as_deref(),
            f.correlation_id.as_deref(),
            f.method,
            &f.path,
            f.status,
        )
    }
}

impl From<Request> for RequestFields {
    fn from(r: Request) -> RequestFields {
        RequestFields {
            time: r.time,
            principal: r.principal().to_string(),
            app: r.app().map(str::to_string),
            correlation_id: r.correlation_id().map(str::to_string),
            method: r.method,
            path: r.path().to_string(),
            status: r.status,
        }
    }
}

/// What the episode machine reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaverEvent {
    /// An episode ended (disabled or cancelled).
    Ended(Episode),
    PostDisable(PostDisableActivity),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Pair {
    /// Boxed: every pair that ever had a leaver stays in the map, most with nothing open.
    open: Option<Box<Episode>>,
    /// When the last episode closed, and whether a rehire came since.
    last_closed_at: Option<Ts>,
    rehired_since_close: bool,
    /// The earliest 2xx among the open episode's leaver operations seen so far: the episode
    /// closes at it ([`Episodes::on_close`]), when the timeline reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closing: Option<Ts>,
    /// The user id the operation that disabled the last episode named, when known (not a
    /// trigger's, which a source of truth may give in a scheme of its own): a leaver
    /// operation naming another id under the same login is another account (a login handed
    /// on, a contractor's login kept by the employee), whose leave opens its own episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed_user_id: Option<String>,
}

/// An open episode a merge of two pairs ended: disabled at the other side's closure, or
/// (`None`: merged into the other side's open episode) cancelled.
pub(crate) fn ended_by(mut episode: Episode, disabled_at: Option<Ts>) -> Episode {
    match disabled_at {
        Some(at) => {
            episode.disabled_at = Some(at.max(episode.initiated_at));
            episode.state = EpisodeState::Disabled;
        }
        None => episode.state = EpisodeState::Cancelled,
    }
    episode
}

impl Pair {
    /// Takes in the pair of the same app under another name (an alias added across a
    /// restart), as one pair would stand had both names always been one: an episode begun
    /// before the other side's closure, of the same account, was ended by it, a rehire
    /// since or not (a trigger's under one name, the IdP's disable under the other: kept
    /// open, it paged overdue; helper-63, helper-65); of two open episodes the older stays,
    /// with the other's operations, first attempt and user keys, and the earlier 2xx seen
    /// to close it, and the other is cancelled; the later closure stands, rehired if either
    /// side was (when in doubt, the next leave opens an episode). Ended episodes go to
    /// `ended`.
    fn merge(
        &mut self,
        closures: &[Closure],
        mut other: Pair,
        other_closures: &[Closure],
        ended: &mut Vec<Episode>,
    ) {
        // When the other side's first closure, of the same account, at or after the
        // episode's first operation, disabled it: its disables by time (`closures`, known
        // where the login is), else its last. One begun after the closures is kept open:
        // whether a rehire came between is not known (a rehire under a spelling with no
        // closure of its own is not kept), and cancelled, a real leaver still not disabled
        // was dropped (helper-66); when in doubt, an episode.
        let ends = |open: &Option<Box<Episode>>, closer: &Pair, closures: &[Closure]| {
            let episode = open.as_ref()?;
            let start = episode.first_attempt_at.unwrap_or(episode.initiated_at);
            let same_account = |closed: Option<&str>| match (episode.user_id.as_deref(), closed) {
                (Some(id), Some(closed)) => fold_case(id) == fold_case(closed),
                _ => true,
            };
            let first = (closures.iter())
                .filter(|(at, id)| *at >= start && same_account(id.as_deref()))
                .map(|(at, _)| *at)
                .min();
            first.or_else(|| {
                (closer.last_closed_at)
                    .filter(|at| *at >= start && same_account(closer.closed_user_id.as_deref()))
            })
        };
        if let Some(disabled_at) = ends(&self.open, &other, other_closures) {
            ended.extend(self.open.take().map(|e| ended_by(*e, Some(disabled_at))));
            self.closing = None;
        }
        if let Some(disabled_at) = ends(&other.open, self, closures) {
            ended.extend(other.open.take().map(|e| ended_by(*e, Some(disabled_at))));
            other.closing = None;
        }
        let closing = match (self.closing, other.closing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.open = match (self.open.take(), other.open.take()) {
            (Some(a), Some(b)) => {
                let (mut kept, dropped) = if b.initiated_at < a.initiated_at {
                    (b, a)
                } else {
                    (a, b)
                };
                // Its `open` row, if written, is ended by a cancelled one: it is the kept
                // episode's now (helper-66). Begun at the same instant, its rows are the kept
                // one's already (one episode to a pack: app, start and user).
                if dropped.initiated_at != kept.initiated_at {
                    ended.push(ended_by((*dropped).clone(), None));
                }
                for cid in dropped.correlation_ids {
                    if !kept.correlation_ids.contains(&cid) {
                        kept.correlation_ids.push(cid);
                    }
                }
                kept.first_attempt_at = match (kept.first_attempt_at, dropped.first_attempt_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                kept.user_id = kept.user_id.or(dropped.user_id);
                kept.user_login = kept.user_login.or(dropped.user_login);
                Some(kept)
            }
            (a, b) => a.or(b),
        };
        self.closing = closing.filter(|_| self.open.is_some());
        let rehired = self.rehired_since_close || other.rehired_since_close;
        if other.last_closed_at > self.last_closed_at {
            self.last_closed_at = other.last_closed_at;
            self.closed_user_id = other.closed_user_id;
        }
        self.rehired_since_close = rehired;
    }

    /// Disabled at `at` by the leaver operation `op`, with no rehire since.
    fn disabled(&mut self, at: Ts, op: &LifecycleOp) {
        self.last_closed_at = Some(at);
        self.rehired_since_close = false;
        self.closed_user_id = op.user_id().map(str::to_string);
    }

    /// Disabled, with no rehire since, for the account `user_id` names: a leaver operation
    /// for it opens no new episode (clarification 15).
    fn disabled_for(&self, user_id: Option<&str>) -> bool {
        let another_account = match (user_id, self.closed_user_id.as_deref()) {
            (Some(id), Some(closed)) => fold_case(id) != fold_case(closed),
            _ => false,
        };
        self.last_closed_at.is_some() && !self.rehired_since_close && !another_account
    }
}

/// A disable of a pair: when, and the user id it named (`Disabled`'s, by login).
type Closure = (Ts, Option<String>);

/// A pair an earlier run saw disabled, for [`Episodes::carry_closed`].
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub app: String,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    pub disabled_at: Ts,
    /// The first joiner for the pair after `disabled_at` the earlier run saw: a rehire.
    pub rehired_at: Option<Ts>,
}

/// An interval in which the user's account in `app` was disabled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Disabled {
    app: String,
    login: String,
    user_id: Option<String>,
    from: Ts,
    until: Option<Ts>,
    /// Its episode's clock was an app-less trigger's (the user disabled at the source), so
    /// the user enabled again at the source undoes it; an unassignment from the app is not.
    /// Absent (false) in checkpoints from before it existed: such an interval stays open.
    #[serde(default)]
    by_source: bool,
}

/// The episode state machine over all (app, user) pairs.
#[derive(Debug)]
pub struct Episodes {
    policy: Policy,
    pairs: PairMap,
    /// Triggers without an app, by user key: they cover every app of that user.
    user_triggers: FastMap<String, Vec<Ts>>,
    /// The latest return by each user key it named, an app's after its name ([`return_key`]):
    /// an account disabled under an old login and returned since under a new one is live
    /// again, though the return, keyed by the new login, found no pair to rehire
    /// ([`Episodes::renamed_since_closed`]; helper-44: the next leave under the new login
    /// opened no episode).
    returns: FastMap<String, Ts>,
    /// Disabled intervals by lowercased login, for post-disable activity.
    disabled: FastMap<String, Vec<Disabled>>,
    open: OpenIndex,
    /// A hash of (app, folded user id) → the user key of the pair last disabled for that
    /// account ([`Episodes::closed_by_id`]): a user renamed after their account was disabled
    /// keeps the id, so a leaver operation under the new login (a delete) is the same
    /// account's and opens no episode (clarification 15), and a joiner under it is the
    /// rehire. Hashed, as [`OpenIndex::ids`]; a hit is checked against the pair. Not in
    /// checkpoints: rebuilt from the pairs.
    closed_ids: FastMap<u64, String>,
    /// The open episodes a restore decided otherwise ([`Episodes::take_redecided`]).
    redecided: Vec<(String, String, Ts)>,
}

/// The open episodes. `keys`: the pairs whose episode is open and whose disable has not been
/// seen (none waits for its 2xx's turn): the daemon lists them every pass, and `pairs` keeps
/// every (app, user) that ever left, so it is not walked for that. Most leavers are disabled
/// by the operation that opens their episode: those never enter the B-tree of string pairs
/// (it cost a replay ~8% of its time when every episode did).
#[derive(Debug, Default)]
struct OpenIndex {
    keys: BTreeSet<(String, String)>,
    /// A hash of (app, folded user id) → the user key of the pair whose open episode (any,
    /// also one waiting for its 2xx) has that id: a user renamed while an episode is open keeps the id (the SCIM resource, the IdP's
    /// user), so an operation under the new login still finds it. Hashed, so that an entry
    /// costs one allocation: a hit is checked against the episode ([`Episodes::open_by_id`]).
    /// With how many open episodes share it: the entry names the smallest of their user keys,
    /// whatever the order they opened in (a restored run finds the one a live run does).
    ids: FastMap<u64, (String, u32)>,
    hasher: ahash::RandomState,
}

impl OpenIndex {
    fn insert(&mut self, key: &(String, String), episode: &Episode) {
        self.keys.insert(key.clone());
        self.note_id(key, episode);
    }

    fn id_hash(&self, app: &str, id: &str) -> u64 {
        self.folded_id_hash(app, &fold_case(id))
    }

    /// [`OpenIndex::id_hash`] of an id already folded: the two must agree, an operation's
    /// [`Account`] being looked up in entries made by either.
    fn folded_id_hash(&self, app: &str, folded: &str) -> u64 {
        self.hasher.hash_one((app, folded))
    }

    /// The account `keys` (an operation's, [`user_keys`]) names by id, if any.
    fn account<'a>(
        &self,
        app: &str,
        keys: &'a UserKeys<'_>,
        user_id: Option<&str>,
    ) -> Option<Account<'a>> {
        user_id?;
        let id: &str = keys.last()?;
        Some(Account {
            id,
            hash: self.folded_id_hash(app, id),
        })
    }

    /// Indexes the episode's user id, once it has one.
    fn note_id(&mut self, key: &(String, String), episode: &Episode) {
        if let Some(id) = &episode.user_id {
            let hash = self.id_hash(&key.0, id);
            match self.ids.entry(hash) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert((key.1.clone(), 1));
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    let (user, count) = slot.get_mut();
                    *count += 1;
                    if key.1 < *user {
                        *user = key.1.clone();
                    }
                }
            }
        }
    }

    /// Takes the pair out; `pairs` (this one's already without its episode) finds another
    /// open episode with the same id when the entry named this one.
    fn remove(&mut self, key: &(String, String), episode: &Episode, pairs: &PairMap) {
        self.keys.remove(key);
        self.forget_id(key, episode, pairs);
    }

    /// Takes the pair's episode out of the index by id.
    fn forget_id(&mut self, key: &(String, String), episode: &Episode, pairs: &PairMap) {
        let Some(id) = &episode.user_id else {
            return;
        };
        let hash = self.id_hash(&key.0, id);
        let Some((user, count)) = self.ids.get_mut(&hash) else {
            return;
        };
        if *count <= 1 {
            self.ids.remove(&hash);
            return;
        }
        *count -= 1;
        if *user == key.1 {
            // Rare: two open episodes of one app under one id. The next smallest (all pairs
            // are looked at: one waiting for its 2xx is not in `keys`).
            let folded = fold_case(id);
            let next = pairs
                .iter()
                .filter(|(k, p)| {
                    k.0 == key.0
                        && (p.open.as_ref())
                            .and_then(|e| e.user_id.as_deref())
                            .is_some_and(|other| fold_case(other) == folded)
                })
                .map(|(k, _)| &k.1)
                .min();
            match next {
                Some(next) => *user = next.clone(),
                None => {
                    self.ids.remove(&hash);
                }
            }
        }
    }
}

/// What [`Episodes`] holds, for a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct EpisodesState {
    pairs: Vec<((String, String), Pair)>,
    user_triggers: Vec<(String, Vec<Ts>)>,
    disabled: Vec<(String, Vec<Disabled>)>,
    /// Absent from checkpoints written before it existed.
    #[serde(default)]
    returns: Vec<(String, Ts)>,
}

impl EpisodesState {
    /// Gives the episodes' apps their names under the config now (`[apps] aliases` changed
    /// across a restart), as a replay with the new config would: two pairs that become one
    /// keep the open episode (the older, if both had one) and the later closure. How many
    /// were renamed.
    pub fn rename_apps(
        &mut self,
        rename: crate::model::Rename<'_>,
        ended: &mut Vec<Episode>,
    ) -> usize {
        use crate::model::rename_app;
        let mut renamed = 0;
        // Each pair's disables by time, under the names before (a pair knows only its last).
        let mut closures: BTreeMap<(&str, &str), Vec<Closure>> = BTreeMap::new();
        for (user, intervals) in &self.disabled {
            for interval in intervals {
                (closures
                    .entry((interval.app.as_str(), user.as_str()))
                    .or_default())
                .push((interval.from, interval.user_id.clone()));
            }
        }
        let mut pairs: BTreeMap<(String, String), (Pair, Vec<Closure>)> = BTreeMap::new();
        for ((mut app, user), mut pair) in std::mem::take(&mut self.pairs) {
            let known = closures
                .get(&(app.as_str(), user.as_str()))
                .cloned()
                .unwrap_or_default();
            renamed += usize::from(rename_app(&mut app, rename));
            if let Some(episode) = pair.open.as_mut() {
                rename_app(&mut episode.app, rename);
                if let Some(decided_on) = episode.decided_on.as_mut() {
                    crate::model::rename_some_app(&mut decided_on.app, rename);
                }
            }
            match pairs.entry((app, user)) {
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert((pair, known));
                }
                std::collections::btree_map::Entry::Occupied(mut entry) => {
                    let (kept, kept_closures) = entry.get_mut();
                    kept.merge(kept_closures, pair, &known, ended);
                    kept_closures.extend(known);
                }
            }
        }
        drop(closures);
        self.pairs = (pairs.into_iter())
            .map(|(key, (pair, _))| (key, pair))
            .collect();
        for (_, intervals) in &mut self.disabled {
            for interval in intervals {
                renamed += usize::from(rename_app(&mut interval.app, rename));
            }
        }
        let mut returns: BTreeMap<String, Ts> = BTreeMap::new();
        for (key, at) in std::mem::take(&mut self.returns) {
            let key = match key.split_once('\0') {
                Some((app, user)) => match rename(app) {
                    Some(app) => {
                        renamed += 1;
                        return_key(Some(&app), user)
                    }
                    None => key,
                },
                None => key,
            };
            let latest = returns.entry(key).or_insert(at);
            *latest = (*latest).max(at);
        }
        self.returns = returns.into_iter().collect();
        renamed
    }

    /// Each open episode, with the time of the 2xx that disables it where one has been seen
    /// (its closure waits in the timeline).
    pub fn open(&self) -> impl Iterator<Item = (&Episode, Option<Ts>)> {
        (self.pairs.iter()).filter_map(|(_, pair)| Some((pair.open.as_deref()?, pair.closing)))
    }
}

/// [`EpisodesState`], borrowed from the live machine.
#[derive(Debug, Serialize)]
pub struct EpisodesStateRef<'a> {
    pairs: Vec<(&'a (String, String), &'a Pair)>,
    user_triggers: Vec<(&'a String, &'a Vec<Ts>)>,
    disabled: Vec<(&'a String, &'a Vec<Disabled>)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    returns: Vec<(&'a String, &'a Ts)>,
}

fn key_of(text: &str) -> String {
    fold_case(text).into_owned()
}

/// The keys a user may be known by: login first (what outputs show), then id. Borrowed when
/// already folded.
/// A return's key in [`Episodes::returns`]: the user key, after its app and a NUL if it has
/// one (an app-less return's is the key alone, as in checkpoints from before apps were kept).
fn return_key(app: Option<&str>, key: &str) -> String {
    match app {
        Some(app) => format!("{app}\0{key}"),
        None => key.to_string(),
    }
}

fn user_keys<'a>(login: Option<&'a str>, id: Option<&'a str>) -> UserKeys<'a> {
    let mut keys = UserKeys {
        keys: [Cow::Borrowed(""), Cow::Borrowed("")],
        len: 0,
    };
    for text in login.into_iter().chain(id) {
        keys.keys[keys.len] = fold_case(text);
        keys.len += 1;
    }
    keys
}

/// A user's keys (login, then id, each folded), without a list on the heap: this is built
/// for every lifecycle operation.
struct UserKeys<'a> {
    keys: [Cow<'a, str>; 2],
    len: usize,
}

impl<'a> std::ops::Deref for UserKeys<'a> {
    type Target = [Cow<'a, str>];

    fn deref(&self) -> &Self::Target {
        &self.keys[..self.len]
    }
}

/// A user id, folded, with its hash in an app ([`OpenIndex::id_hash`]): looked up in the
/// indexes by id once an operation's, for every one of them.
#[derive(Clone, Copy)]
struct Account<'a> {
    id: &'a str,
    hash: u64,
}

/// An (app, user) pair's key, borrowed: hashes as the owned `(String, String)` does, so a
/// pair is looked up without building its key.
struct PairRef<'a>(&'a str, &'a str);

impl Hash for PairRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0, self.1).hash(state);
    }
}

impl hashbrown::Equivalent<(String, String)> for PairRef<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

impl Episodes {
    pub fn new(policy: Policy) -> Episodes {
        Episodes {
            policy,
            pairs: Default::default(),
            user_triggers: FastMap::default(),
            returns: FastMap::default(),
            disabled: FastMap::default(),
            open: OpenIndex::default(),
            closed_ids: FastMap::default(),
            redecided: Vec::new(),
        }
    }

    /// The state, for a checkpoint: borrowed and sorted, serialized as an [`EpisodesState`].
    pub fn snapshot(&self) -> EpisodesStateRef<'_> {
        fn sorted<'m, K: Ord + 'm, V: 'm>(
            map: impl Iterator<Item = (&'m K, &'m V)>,
        ) -> Vec<(&'m K, &'m V)> {
            let mut entries: Vec<(&K, &V)> = map.collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            entries
        }
        EpisodesStateRef {
            pairs: sorted(self.pairs.iter()),
            user_triggers: sorted(self.user_triggers.iter()),
            returns: sorted(self.returns.iter()),
            disabled: sorted(self.disabled.iter()),
        }
    }

    /// Rebuilds the machine from a checkpoint. An open episode's high-risk flag and deadline
    /// are decided again by `policy`, on what they were decided on (the config may have
    /// changed since): a high-risk app added, to page on its leavers already overdue, or a
    /// deadline changed, applies to them as a replay of the same logs with the new config
    /// would.
    pub fn restore(policy: Policy, mut state: EpisodesState) -> Episodes {
        let mut open = OpenIndex::default();
        let mut redecided = Vec::new();
        for (key, pair) in &mut state.pairs {
            if let Some(episode) = &mut pair.open {
                if let Some(decided_on) = &episode.decided_on {
                    let decided = policy.decide(decided_on.subject());
                    if decided != (episode.high_risk, episode.deadline_seconds) {
                        (episode.high_risk, episode.deadline_seconds) = decided;
                        let user = episode.alert_user().to_string();
                        redecided.push((episode.app.clone(), user, episode.initiated_at));
                    }
                }
                if pair.closing.is_none() {
                    open.keys.insert(key.clone());
                }
                open.note_id(key, episode);
            }
        }
        let mut episodes = Episodes {
            policy,
            pairs: state.pairs.into_iter().collect(),
            user_triggers: state.user_triggers.into_iter().collect(),
            returns: state.returns.into_iter().collect(),
            disabled: state.disabled.into_iter().collect(),
            open,
            closed_ids: FastMap::default(),
            redecided,
        };
        episodes.index_closed();
        episodes
    }

    /// The open episodes a restore decided otherwise than before (app, the user as it
    /// opened, start), once: an `open` row written for one past its deadline holds the old
    /// decision, and a new one is due.
    pub fn take_redecided(&mut self) -> Vec<(String, String, Ts)> {
        std::mem::take(&mut self.redecided)
    }

    /// Takes up an episode an earlier run left open (`replay --append`): it stays open under
    /// its pair, with its start and deadline, until an operation closes it. A pair that
    /// already has an open episode keeps its own.
    pub fn carry_over(&mut self, episode: Episode) {
        let keys = user_keys(episode.user_login.as_deref(), episode.user_id.as_deref());
        let app = episode.app.clone();
        let Some(pair_key) = self.pair_key(&app, &keys) else {
            return;
        };
        let pair = self.pairs.entry(pair_key.clone()).or_default();
        if pair.open.is_none() {
            self.open.insert(&pair_key, &episode);
            pair.open = Some(Box::new(episode));
        }
    }

    /// Takes up a pair an earlier run saw disabled (`replay --append`, from the store's
    /// `disabled` rows): closed at `disabled_at`, so a later leaver operation with no rehire
    /// between opens no new episode (clarification 15), and a request made as the user in
    /// that app is post-disable activity (13) until `rehired_at`, a joiner the earlier run
    /// saw. A pair that knows a later closure, or holds an open episode, keeps its own.
    pub fn carry_closed(&mut self, closed: &Closed) {
        let keys = user_keys(closed.user_login.as_deref(), closed.user_id.as_deref());
        let Some(pair_key) = self.pair_key(&closed.app, &keys) else {
            return;
        };
        let pair = self.pairs.entry(pair_key.clone()).or_default();
        if pair.open.is_some() || pair.last_closed_at >= Some(closed.disabled_at) {
            return;
        }
        pair.last_closed_at = Some(closed.disabled_at);
        pair.rehired_since_close = closed.rehired_at.is_some();
        // Not the row's user id: it may be a trigger's. Unknown, the next leaver operation
        // under the login opens no episode, as before accounts were told apart.
        if let Some(id) = pair.closed_user_id.take() {
            self.forget_closed(&pair_key, &id);
        }
        if let Some(login) = &closed.user_login {
            crate::model::push_small(
                self.disabled.entry(key_of(login)).or_default(),
                Disabled {
                    app: closed.app.clone(),
                    login: login.clone(),
                    user_id: closed.user_id.clone(),
                    from: closed.disabled_at,
                    until: closed.rehired_at,
                    // Only closures the source did not start are carried: none a return
                    // there could undo.
                    by_source: false,
                },
            );
        }
    }

    /// Drops the oldest open episode to respect a memory cap; the caller writes it if it is
    /// already breached. Not one whose disable has been seen: it closes at its 2xx's turn.
    pub fn evict_oldest_open(&mut self) -> Option<Episode> {
        let key = self
            .open
            .keys
            .iter()
            .filter_map(|key| {
                let pair = self.pairs.get(key).filter(|pair| pair.closing.is_none())?;
                Some((pair.open.as_ref()?.initiated_at, key))
            })
            .min()?
            .1
            .clone();
        let episode = self.pairs.get_mut(&key)?.open.take()?;
        self.open.remove(&key, &episode, &self.pairs);
        Some(*episode)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Episodes currently open.
    pub fn open_count(&self) -> usize {
        self.open.keys.len()
    }

    /// The index of open pairs agrees with the pairs themselves.
    #[cfg(test)]
    pub(crate) fn assert_open_index(&self) {
        let open: BTreeSet<(String, String)> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.open.is_some() && p.closing.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(open, self.open.keys);
        let mut ids: FastMap<u64, (String, u32)> = FastMap::default();
        for (key, pair) in &self.pairs {
            if let Some(id) = pair.open.as_ref().and_then(|e| e.user_id.as_deref()) {
                let entry = ids
                    .entry(self.open.id_hash(&key.0, id))
                    .or_insert_with(|| (key.1.clone(), 0));
                entry.1 += 1;
                if key.1 < entry.0 {
                    entry.0 = key.1.clone();
                }
            }
        }
        assert_eq!(ids, self.open.ids);
        // The index of closed pairs by id is the one a restore builds, but for entries no
        // longer naming a closed pair (checked at every lookup).
        let mut rebuilt = Episodes::new(self.policy.clone());
        rebuilt.open.hasher = self.open.hasher.clone();
        rebuilt.pairs = self.pairs.clone();
        rebuilt.index_closed();
        let mut live = self.closed_ids.clone();
        live.retain(|hash, user| {
            (self.pairs.iter()).any(|(key, pair)| {
                key.1 == *user
                    && pair.last_closed_at.is_some()
                    && (pair.closed_user_id.as_deref())
                        .is_some_and(|id| self.open.id_hash(&key.0, id) == *hash)
            })
        });
        assert_eq!(live, rebuilt.closed_ids);
    }

    /// The key of the pair of `app` whose open episode has the user id `id`, if any.
    fn open_by_id(&self, app: &str, account: Account<'_>) -> Option<(String, String)> {
        if self.open.ids.is_empty() {
            return None;
        }
        let (user, _) = self.open.ids.get(&account.hash)?;
        let pair = self.pairs.get(&PairRef(app, user))?;
        let known = pair.open.as_ref()?.user_id.as_deref()?;
        (fold_case(known) == account.id).then(|| (app.to_string(), user.clone()))
    }

    /// Builds the index of closed pairs by id from the pairs (a restore).
    fn index_closed(&mut self) {
        self.closed_ids.clear();
        let closed: Vec<(String, String)> = (self.pairs.iter())
            .filter(|(_, pair)| pair.last_closed_at.is_some() && pair.closed_user_id.is_some())
            .map(|(key, _)| key.clone())
            .collect();
        for key in &closed {
            if let Some(id) = self
                .pairs
                .get(key)
                .and_then(|p| p.closed_user_id.as_deref())
            {
                let hash = self.open.id_hash(&key.0, id);
                self.note_closed(key, hash);
            }
        }
    }

    /// Indexes the pair `key` by the account its last closure disabled. Of two pairs of an
    /// app closed for one account (the logins before and after a rename), the entry names
    /// the one closed last, then the smallest key, whatever the order they closed in (a
    /// restored run finds the one a live run does).
    fn note_closed(&mut self, key: &(String, String), hash: u64) {
        let slot = match self.closed_ids.entry(hash) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(key.1.clone()); // the usual case: the account's first closure
                return;
            }
            std::collections::hash_map::Entry::Occupied(slot) => slot.get().clone(),
        };
        let Some(id) = (self.pairs.get(key)).and_then(|pair| pair.closed_user_id.clone()) else {
            return;
        };
        let Some(rank) = self.closed_rank(&key.0, &key.1, &id) else {
            return;
        };
        if self
            .closed_rank(&key.0, &slot, &id)
            .is_none_or(|known| known < rank)
        {
            self.closed_ids.insert(hash, key.1.clone());
        }
    }

    /// The pair `key` no longer closed for the account `id` (a joiner cancelled its episode
    /// and the closure before it): the index names the next pair by the same order.
    fn forget_closed(&mut self, key: &(String, String), id: &str) {
        let hash = self.open.id_hash(&key.0, id);
        if self.closed_ids.get(&hash) != Some(&key.1) {
            return;
        }
        self.closed_ids.remove(&hash);
        // Rare (a leave, a rehire, a leave cancelled): every pair of the app is looked at.
        let next = (self.pairs.keys())
            .filter(|other| other.0 == key.0)
            .filter_map(|other| Some((self.closed_rank(&other.0, &other.1, id)?, &other.1)))
            .max()
            .map(|(_, user)| user.clone());
        if let Some(user) = next {
            self.closed_ids.insert(hash, user);
        }
    }

    /// How the pair `(app, user)` ranks in the index by id for the account `id`, when its last
    /// closure disabled that account: the later closure first, then the smaller key.
    fn closed_rank<'a>(
        &self,
        app: &str,
        user: &'a str,
        id: &str,
    ) -> Option<(Ts, std::cmp::Reverse<&'a str>)> {
        let pair = self.pairs.get(&PairRef(app, user))?;
        let closed = pair.closed_user_id.as_deref()?;
        if fold_case(closed) != fold_case(id) {
            return None;
        }
        Some((pair.last_closed_at?, std::cmp::Reverse(user)))
    }

    /// The key of the pair of `app` whose last closure disabled the account `id`, with no
    /// rehire since and nothing open, when its user key is not `user`: the user was renamed
    /// after the disable.
    fn closed_by_id(
        &self,
        app: &str,
        account: Account<'_>,
        user: &str,
    ) -> Option<(String, String)> {
        if self.closed_ids.is_empty() {
            return None;
        }
        let found = self.closed_ids.get(&account.hash)?;
        if found == user {
            return None;
        }
        let pair = self.pairs.get(&PairRef(app, found))?;
        let closed = pair.closed_user_id.as_deref()?;
        let same = fold_case(closed) == account.id;
        (same && pair.open.is_none() && pair.disabled_for(Some(account.id)))
            .then(|| (app.to_string(), found.clone()))
    }

    /// Every open episode, in (initiated_at, app, user) order.
    pub fn open_episodes(&self) -> Vec<&Episode> {
        let mut open: Vec<&Episode> = self
            .open
            .keys
            .iter()
            .filter_map(|key| self.pairs.get(key)?.open.as_deref())
            .collect();
        open.sort_by(|a, b| {
            (a.initiated_at, &a.app, a.user()).cmp(&(b.initiated_at, &b.app, b.user()))
        });
        open
    }

    /// Finds the pair of (app, user) under any of the user's keys, re-keying a pair a trigger
    /// opened under the user id once the login is known.
    fn pair_key(&mut self, app: &str, keys: &[Cow<'_, str>]) -> Option<(String, String)> {
        let primary = keys.first()?.to_string();
        let primary_key = (app.to_string(), primary);
        if self.pairs.contains_key(&primary_key) {
            return Some(primary_key);
        }
        for other in &keys[1..] {
            let other_key = (app.to_string(), other.to_string());
            if let Some(pair) = self.pairs.remove(&other_key) {
                if let Some(episode) = &pair.open {
                    if self.open.keys.remove(&other_key) {
                        self.open.keys.insert(primary_key.clone());
                    }
                    self.open.forget_id(&other_key, episode, &self.pairs);
                    self.open.note_id(&primary_key, episode);
                }
                let closed_id = pair
                    .closed_user_id
                    .clone()
                    .filter(|_| pair.last_closed_at.is_some());
                self.pairs.insert(primary_key.clone(), pair);
                if let Some(id) = closed_id {
                    // The index by id follows the pair to its new key (it named the old one,
                    // and a restored run, whose index is rebuilt, found another: helper-44).
                    self.forget_closed(&other_key, &id);
                    let hash = self.open.id_hash(app, &id);
                    self.note_closed(&primary_key, hash);
                }
                return Some(primary_key);
            }
        }
        Some(primary_key)
    }

    pub fn on_trigger(&mut self, trigger: &Trigger, out: &mut Vec<LeaverEvent>) {
        let keys = user_keys(trigger.user_login.as_deref(), trigger.user_id.as_deref());
        if trigger.returns {
            return self.on_return(trigger, &keys, out);
        }
        let Some(app) = &trigger.app else {
            for key in keys.iter() {
                self.user_triggers
                    .entry(key.to_string())
                    .or_default()
                    .push(trigger.time);
            }
            return;
        };
        let Some(pair_key) = self.pair_key(app, &keys) else {
            return;
        };
        // A user renamed since the account was disabled, or while its episode is open under
        // the old login: the trigger is that account's and opens nothing (helper-46: one under
        // the new login opened an episode no operation would close, a false breach).
        let account = self.open.account(app, &keys, trigger.user_id.as_deref());
        if self.renamed(&pair_key, account).is_some()
            || self
                .renamed_since_closed(&pair_key, &keys, account)
                .is_some()
        {
            return;
        }
        let policy = &self.policy;
        let pair = self.pairs.entry(pair_key.clone()).or_default();
        if pair.open.is_some() || (pair.last_closed_at.is_some() && !pair.rehired_since_close) {
            return;
        }
        let subject = Subject {
            app: Some(app),
            user_login: trigger.user_login.as_deref(),
            user_id: trigger.user_id.as_deref(),
            groups: &trigger.groups,
        };
        let (high_risk, deadline_seconds) = policy.decide(subject);
        pair.open = Some(Box::new(Episode {
            app: app.clone(),
            user_id: trigger.user_id.clone(),
            user_login: trigger.user_login.clone(),
            initiated_at: trigger.time,
            first_attempt_at: None,
            disabled_at: None,
            high_risk,
            deadline_seconds,
            correlation_ids: Vec::new(),
            state: EpisodeState::Open,
            initiated_by: trigger.event.clone(),
            known_as: trigger
                .user_login
                .as_deref()
                .or(trigger.user_id.as_deref())
                .unwrap_or("")
                .to_string(),
            by_source: false,
            started_by: Some(ClockStart::AppTrigger),
            disabled_by: None,
            decided_on: Some(Box::new(Decided::of(subject))),
        }));
        if let Some(episode) = &pair.open {
            self.open.insert(&pair_key, episode);
        }
    }

    /// The user enabled again at the source of truth (or, with an app, assigned to it again):
    /// the clocks the source started are stopped. Without an app, the user's earlier app-less
    /// triggers are dropped (else one from a disable undone within a provisioning cycle, with
    /// no SCIM call, would start the clock of a leaver months later: a false breach), and
    /// the open episodes they started are cancelled; with an app, that pair's open episode is
    /// cancelled if it began before the return, as a joiner operation for it would be.
    /// Cancelled: no latency, no breach. Then [`Episodes::mark_returned`].
    fn on_return(&mut self, trigger: &Trigger, keys: &UserKeys<'_>, out: &mut Vec<LeaverEvent>) {
        // Kept by app (an assignment to one app is no return to another: helper-46), and, for
        // an app, only when the account has a closure there to undo (every assignment was
        // kept for ever, two keys each), or when the return names no id to tell (kept by
        // login: helper-47's missed leave after a return naming only the login).
        let app = trigger.app.as_deref();
        // (With an app: the account the return names by id, if it names one.)
        let account = app.and_then(|app| self.open.account(app, keys, trigger.user_id.as_deref()));
        let closed_there =
            account.is_none_or(|account| self.closed_ids.contains_key(&account.hash));
        if closed_there {
            for key in keys.iter() {
                let latest = (self.returns)
                    .entry(return_key(app, key))
                    .or_insert(trigger.time);
                *latest = (*latest).max(trigger.time);
            }
        }
        let mut cancel: Vec<(String, String)> = Vec::new();
        match &trigger.app {
            None => {
                for key in keys.iter() {
                    if let Some(times) = self.user_triggers.get_mut(key.as_ref()) {
                        times.retain(|t| *t > trigger.time);
                        if times.is_empty() {
                            self.user_triggers.remove(key.as_ref());
                        }
                    }
                }
                // The open episodes are walked (bounded by `max_open_episodes`) rather than
                // indexed by user: a pair is keyed by one of its user's keys, and the trigger
                // that started it may have matched the other (Okta: the operations name the
                // app's login, the lifecycle events the Okta login; both carry the user id).
                // The user matches as the trigger did, by any key.
                let names_user = |e: &Episode| {
                    user_keys(e.user_login.as_deref(), e.user_id.as_deref())
                        .iter()
                        .any(|k| keys.contains(k))
                };
                cancel.extend(
                    self.open
                        .keys
                        .iter()
                        .filter(|key| {
                            self.pairs
                                .get(*key)
                                .and_then(|pair| pair.open.as_deref())
                                .is_some_and(|e| {
                                    e.by_source && e.initiated_at <= trigger.time && names_user(e)
                                })
                        })
                        .cloned(),
                );
            }
            Some(app) => {
                // Not an episode that began after it (a return logged late).
                let began_before = |pair: &Pair| {
                    pair.open
                        .as_deref()
                        .is_some_and(|e| e.initiated_at <= trigger.time)
                };
                // By id too: the user renamed while the episode is open (an assignment under
                // the new login left the old login's episode open: a false breach and page,
                // helper-50), as a joiner operation finds it.
                if let Some(key) = keys
                    .iter()
                    .map(|k| (app.clone(), k.to_string()))
                    .chain(account.and_then(|account| self.open_by_id(app, account)))
                    .find(|key| self.pairs.get(key).is_some_and(began_before))
                {
                    cancel.push(key);
                }
            }
        }
        for key in cancel {
            cancel_open(&mut self.pairs, &key, &mut self.open, out);
        }
        self.mark_returned(trigger, keys, account);
    }

    /// The user back at the source: for the pairs it speaks of, what a joiner operation does
    /// for a disabled account, a rehire. Entra re-enables an app's account with an `update`,
    /// which is no joiner: without this the user's next leave opened no episode
    /// (clarification 15 wants a rehire in between), and every request after the return was
    /// post-disable activity. With an app, that app's; without, the apps the source's own
    /// disable took the user out of (an unassignment from an app is not undone by enabling
    /// the user). The pairs are found through the disabled intervals, kept by login, and,
    /// with an app and an id, through the account's closure there under an older login (an
    /// assignment under the app login after a disable under the Okta login rehired nothing:
    /// the next leave was missed, and the user's requests were post-disable activity;
    /// helper-50).
    fn mark_returned(
        &mut self,
        trigger: &Trigger,
        keys: &UserKeys<'_>,
        account: Option<Account<'_>>,
    ) {
        let renamed: Option<String> = trigger.app.as_deref().and_then(|app| {
            let (_, user) = self.closed_by_id(app, account?, keys.first()?)?;
            Some(user)
        });
        let keys: Vec<Cow<'_, str>> = keys
            .iter()
            .cloned()
            .chain(renamed.map(Cow::Owned))
            .collect();
        let Episodes {
            pairs, disabled, ..
        } = self;
        let speaks_of = |interval: &Disabled| match trigger.app.as_deref() {
            Some(app) => interval.app == app,
            None => interval.by_source,
        };
        let rehire = |pair: Option<&mut Pair>| {
            if let Some(pair) = pair {
                if pair.open.is_none() && pair.last_closed_at.is_some_and(|t| t <= trigger.time) {
                    pair.rehired_since_close = true;
                }
            }
        };
        for key in &keys {
            if let Some(intervals) = disabled.get_mut(key.as_ref()) {
                for interval in intervals
                    .iter_mut()
                    .filter(|i| i.until.is_none() && i.from <= trigger.time && speaks_of(i))
                {
                    interval.until = Some(trigger.time);
                    rehire(pairs.get_mut(&PairRef(&interval.app, key)));
                }
            }
            if let Some(app) = &trigger.app {
                rehire(pairs.get_mut(&PairRef(app, key)));
            }
        }
    }

    /// A lifecycle operation, in the timeline's order: a joiner cancels or rehires, a leaver
    /// opens or joins its pair's episode. `true` when it is a leaver whose 2xx disables that
    /// episode: the caller hands it to [`Episodes::on_close`] at the 2xx's time (not the
    /// operation's), once every operation that may have disabled the user earlier has been
    /// seen here.
    pub fn on_operation(&mut self, op: &LifecycleOp, out: &mut Vec<LeaverEvent>) -> bool {
        if op.outcome == Outcome::Skipped || op.outcome == Outcome::Unattributed {
            return false;
        }
        let keys = user_keys(op.user_login(), op.user_id());
        let app = op.app().unwrap_or_default();
        // Most joiners have never left the app: no pair to cancel or rehire, nothing to build.
        if op.stage == Stage::Joiner
            && !keys
                .iter()
                .any(|key| self.pairs.contains_key(&PairRef(app, key)))
        {
            // Unless the user was renamed since leaving: the joiner under the new login
            // cancels the episode open under the old one, or is the rehire of its account.
            let account = self.open.account(app, &keys, op.user_id());
            if let (Some(account), Some(user)) = (account, keys.first()) {
                if let Some(pair_key) = (self.open_by_id(app, account))
                    .or_else(|| self.closed_by_id(app, account, user))
                {
                    self.on_joiner(&pair_key, Some(account), op, out);
                }
            }
            return false;
        }
        let Some(pair_key) = self.pair_key(app, &keys) else {
            return false;
        };
        let account = self.open.account(app, &keys, op.user_id());
        match op.stage {
            Stage::Joiner => self.on_joiner(&pair_key, account, op, out),
            Stage::Leaver => {
                let pair_key = self.renamed(&pair_key, account).unwrap_or(pair_key);
                return self.on_leaver(&pair_key, &keys, account, op);
            }
            Stage::Mover => {}
        }
        false
    }

    /// The pair whose open episode has the user id `user_id`, when the pair `pair_key` names
    /// has none: the user was renamed while it was open (the first disable refused under
    /// the old login, the retry sent under the new one), and it is the same episode.
    fn renamed(
        &self,
        pair_key: &(String, String),
        account: Option<Account<'_>>,
    ) -> Option<(String, String)> {
        let account = account?;
        if self.open.ids.is_empty()
            || self
                .pairs
                .get(pair_key)
                .is_some_and(|pair| pair.open.is_some())
        {
            return None;
        }
        self.open_by_id(&pair_key.0, account)
            .filter(|found| found.1 != pair_key.1)
    }

    /// The pair under the user's old login whose closure disabled the account `user_id`
    /// names, when the pair `pair_key` names holds no episode and has not closed since: the
    /// user was renamed after the disable ([`Episodes::closed_by_id`]).
    fn renamed_since_closed(
        &self,
        pair_key: &(String, String),
        keys: &[Cow<'_, str>],
        account: Option<Account<'_>>,
    ) -> Option<(String, String)> {
        let account = account?;
        let pair = self.pairs.get(pair_key);
        if pair.is_some_and(|p| p.open.is_some() || p.disabled_for(Some(account.id))) {
            return None; // its own state decides
        }
        let found = self.closed_by_id(&pair_key.0, account, &pair_key.1)?;
        let closed_at = self.pairs.get(&found)?.last_closed_at;
        // Returned since, under any of the user's keys, at the source or to this app (an
        // assignment to another app was taken for a return to every app: helper-46): live
        // again (when in doubt, an episode: a second one is noise, a missed one a leaver
        // never watched).
        let returned = keys
            .iter()
            .flat_map(|key| {
                let to_app = self.returns.get(&return_key(Some(&found.0), key));
                [to_app, self.returns.get(&return_key(None, key))]
            })
            .flatten()
            .any(|at| Some(*at) >= closed_at);
        (!returned && pair.and_then(|p| p.last_closed_at) < closed_at).then_some(found)
    }

    /// The account the pair `closed` disabled, renamed since to `login`: a request under the
    /// new login is post-disable activity too (a token may be under either), until the
    /// rehire ([`Episodes::on_joiner`] ends both logins' intervals). No pair is made for the
    /// new login: each of its operations finds the account's pair by id.
    fn disabled_as(&mut self, closed: &(String, String), login: &str) {
        let user = key_of(login);
        let Some(interval) = (self.disabled.get(&closed.1)).and_then(|intervals| {
            (intervals.iter()).find(|i| i.app == closed.0 && i.until.is_none())
        }) else {
            return;
        };
        let intervals = self.disabled.get(&user);
        if intervals.is_some_and(|known| {
            (known.iter())
                .any(|i| i.app == closed.0 && i.until.is_none() && i.from == interval.from)
        }) {
            return;
        }
        let interval = Disabled {
            login: login.to_string(),
            ..interval.clone()
        };
        crate::model::push_small(self.disabled.entry(user).or_default(), interval);
    }

    fn on_joiner(
        &mut self,
        pair_key: &(String, String),
        account: Option<Account<'_>>,
        op: &LifecycleOp,
        out: &mut Vec<LeaverEvent>,
    ) {
        // A joiner older than what the pair holds changes nothing: it cannot cancel an
        // episode begun after it, nor rehire an account closed after it. In one stream of
        // logs joiners come in time order; an episode carried over from a store may be newer
        // than logs appended to it (an overlap cancelled a never-disabled high-risk leaver,
        // and the pack left it out: QA helper-57).
        let since = (self.pairs.get(pair_key)).and_then(|pair| {
            (pair.open.as_ref()).map_or(pair.last_closed_at, |e| Some(e.initiated_at))
        });
        if since.is_some_and(|since| op.time < since) {
            return;
        }
        let cancelled = cancel_open(&mut self.pairs, pair_key, &mut self.open, out);
        // The account's closure under the login it had before a rename: it is live again too.
        let renamed =
            account.and_then(|account| self.closed_by_id(&pair_key.0, account, &pair_key.1));
        let Some(pair) = self.pairs.get_mut(pair_key) else {
            return;
        };
        let mut rehired = None;
        if cancelled {
            pair.last_closed_at = None;
            pair.rehired_since_close = false;
            if let Some(id) = pair.closed_user_id.clone() {
                self.forget_closed(pair_key, &id);
            }
        } else if pair.last_closed_at.is_some() && !pair.rehired_since_close {
            // A rehire: the account is live again from here, and a new leaver starts afresh.
            pair.rehired_since_close = true;
            rehired = Some(pair_key);
        }
        if let Some(key) = &renamed {
            if let Some(pair) = self.pairs.get_mut(key) {
                pair.rehired_since_close = true;
            }
        }
        // Its disabled intervals end: under the pair's login, and the joiner's when the user
        // was renamed since.
        let login = op.user_login().or(op.user_id()).map(key_of);
        for key in rehired.into_iter().chain(&renamed) {
            let renamed_to = login.as_ref().filter(|login| **login != key.1);
            for login in std::iter::once(&key.1).chain(renamed_to) {
                if let Some(intervals) = self.disabled.get_mut(login) {
                    for interval in intervals
                        .iter_mut()
                        .filter(|i| i.app == key.0 && i.until.is_none())
                    {
                        interval.until = Some(op.time);
                    }
                }
            }
        }
    }

    /// Opens the pair's episode or adds the operation to it; `true` when the operation's 2xx
    /// is to close it ([`Episodes::on_operation`]).
    fn on_leaver(
        &mut self,
        pair_key: &(String, String),
        keys: &[Cow<'_, str>],
        account: Option<Account<'_>>,
        op: &LifecycleOp,
    ) -> bool {
        if let Some(closed) = self.renamed_since_closed(pair_key, keys, account) {
            if let Some(login) = op.user_login() {
                self.disabled_as(&closed, login);
            }
            return false; // the account disabled under its old login (clarification 15)
        }
        let policy = &self.policy;
        let pair = self.pairs.entry(pair_key.clone()).or_default();
        let opened_here = pair.open.is_none();
        if opened_here {
            if pair.disabled_for(op.user_id()) {
                return false; // already disabled, no rehire since: not a new episode (clar. 15)
            }
            // The earliest app-less trigger after the pair's last closure counts (clar. 16).
            let after = pair.last_closed_at.unwrap_or(Ts(i64::MIN));
            let trigger = keys
                .iter()
                .filter_map(|k| self.user_triggers.get(k.as_ref()))
                .flatten()
                .copied()
                .filter(|t| *t > after && *t <= op.time)
                .min();
            let mut initiated_at = op.time;
            let mut initiated_by = op.action().to_string();
            let mut by_source = false;
            let mut started_by = ClockStart::Operation;
            for candidate in [trigger, op.trigger_time].into_iter().flatten() {
                if candidate < initiated_at {
                    initiated_at = candidate;
                    by_source = Some(candidate) == trigger;
                    (initiated_by, started_by) = if by_source {
                        (APP_LESS_TRIGGER.into(), ClockStart::UserTrigger)
                    } else {
                        ("trigger_time".into(), ClockStart::TriggerTime)
                    };
                }
            }
            let subject = Subject {
                app: op.app(),
                user_login: op.user_login(),
                user_id: op.user_id(),
                groups: &op.groups,
            };
            let (high_risk, deadline_seconds) = policy.decide(subject);
            pair.open = Some(Box::new(Episode {
                app: pair_key.0.clone(),
                user_id: op.user_id().map(str::to_string),
                user_login: op.user_login().map(str::to_string),
                initiated_at,
                first_attempt_at: None,
                disabled_at: None,
                high_risk,
                deadline_seconds,
                correlation_ids: Vec::new(),
                state: EpisodeState::Open,
                initiated_by,
                known_as: op.user_login().or(op.user_id()).unwrap_or("").to_string(),
                by_source,
                started_by: Some(started_by),
                disabled_by: None,
                decided_on: Some(Box::new(Decided::of(subject))),
            }));
            if let Some(episode) = &pair.open {
                self.open.note_id(pair_key, episode);
            }
        }
        // Listed among the open until its disable is seen.
        let listed = !opened_here && pair.closing.is_none();
        let Some(episode) = pair.open.as_mut() else {
            return false;
        };
        if episode.user_login.is_none() {
            episode.user_login = op.user_login().map(str::to_string);
        }
        if episode.user_id.is_none() && op.user_id().is_some() {
            episode.user_id = op.user_id().map(str::to_string);
            self.open.note_id(pair_key, episode);
        }
        if let Some(cid) = op.correlation_id() {
            if !episode.correlation_ids.iter().any(|known| known == cid) {
                episode.correlation_ids.push(cid.to_string());
            }
        }
        if let Some(first) = op.first_attempt_time {
            episode.first_attempt_at =
                Some(episode.first_attempt_at.map_or(first, |t| t.min(first)));
        }
        // Only a 2xx closes; a 404 leaves it open for a person (clarification 14).
        let Some(success) = op.first_success else {
            if opened_here {
                self.open.keys.insert(pair_key.clone());
            }
            return false;
        };
        pair.closing = Some(pair.closing.map_or(success, |t| t.min(success)));
        if listed {
            self.open.keys.remove(pair_key);
        }
        true
    }

    /// A leaver operation's 2xx, at its time ([`Episodes::on_operation`] said it closes): the
    /// pair's open episode is disabled then, by that operation, if its 2xx is the earliest of
    /// the episode's. Operations reach the timeline in the order of their IdP records, not of
    /// their answers: one logged at 10:00 and answered at 10:08 comes before one logged at
    /// 10:05 and answered at 10:06, which is the one that disabled the account. Nothing when
    /// the episode has already ended (an earlier 2xx, a rehire or a return in between), nor
    /// for a later episode of the pair.
    pub fn on_close(&mut self, op: &LifecycleOp, out: &mut Vec<LeaverEvent>) {
        let Some(disabled_at) = op.first_success else {
            return;
        };
        let app = op.app().unwrap_or_default();
        let keys = user_keys(op.user_login(), op.user_id());
        let account = self.open.account(app, &keys, op.user_id());
        // The open episode this 2xx is the earliest of: under one of the user's keys; else,
        // by the user id, a pair re-keyed by login since the operation was seen, or the
        // user's open episode under an earlier login.
        let closes = |pair: &Pair| pair.open.is_some() && pair.closing == Some(disabled_at);
        let pair_key = match keys
            .iter()
            .find(|key| self.pairs.get(&PairRef(app, key)).is_some_and(closes))
        {
            Some(key) => (app.to_string(), key.to_string()),
            None => match account.and_then(|account| self.open_by_id(app, account)) {
                Some(key) if self.pairs.get(&key).is_some_and(closes) => key,
                _ => return,
            },
        };
        let Some(pair) = self.pairs.get_mut(&pair_key) else {
            return;
        };
        let Some(mut episode) = pair.open.take() else {
            return;
        };
        pair.closing = None;
        episode.disabled_at = Some(disabled_at);
        episode.disabled_by = op.correlation_id().map(str::to_string);
        episode.state = EpisodeState::Disabled;
        pair.disabled(disabled_at, op);
        if let Some(account) = account {
            self.note_closed(&pair_key, account.hash);
        }
        // Not listed since its disable was seen: by id only.
        self.open.forget_id(&pair_key, &episode, &self.pairs);
        // Requests are matched by login: the episode's, and the disabling operation's when
        // the user was renamed in between (a token may be under either).
        let renamed_to = op.user_login().filter(|login| {
            (episode.user_login.as_deref()).is_some_and(|l| fold_case(l) != fold_case(login))
        });
        // A later operation under the new login finds the account's closure by id
        // ([`Episodes::closed_by_id`]): a delete opens no episode, a joiner is the rehire.
        for login in episode.user_login.as_deref().into_iter().chain(renamed_to) {
            crate::model::push_small(
                self.disabled.entry(key_of(login)).or_default(),
                Disabled {
                    app: episode.app.clone(),
                    login: login.to_string(),
                    user_id: episode.user_id.clone(),
                    from: disabled_at,
                    until: None,
                    by_source: episode.by_source,
                },
            );
        }
        out.push(LeaverEvent::Ended(*episode));
    }

    /// A request authenticated as `principal`: post-disable activity if that user's account in
    /// the request's app (any app when the request names none) was disabled at that time.
    pub fn on_request(&mut self, request: &Request, out: &mut Vec<LeaverEvent>) {
        // Every gateway request comes here: looked up without building a key when the
        // principal is already folded.
        let Some(intervals) = self.disabled.get(fold_case(request.principal()).as_ref()) else {
            return;
        };
        let hit = intervals.iter().find(|i| {
            request.app().is_none_or(|app| app == i.app)
                && i.from <= request.time
                && i.until.is_none_or(|until| request.time < until)
        });
        if let Some(interval) = hit {
            out.push(LeaverEvent::PostDisable(PostDisableActivity {
                app: interval.app.clone(),
                user: interval.login.clone(),
                user_id: interval.user_id.clone(),
                time: request.time,
                correlation_id: request.correlation_id().map(str::to_string),
                method: request.method.as_str().to_string(),
                path: request.path().to_string(),
                status: request.status,
                disabled_at: interval.from,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EpisodeState, LifecycleOp, LifecycleOpFields, Request, RequestFields};
    use crate::model::{Method, Outcome, Stage, Texts};
    use crate::time::Ts;

    #[test]
    fn texts_give_back_each_part_present_or_absent() {
        let parts = [Some("app"), None, Some(""), Some("ü-1"), None];
        let texts = Texts::new(parts);
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(texts.get(i), *part, "part {i}");
        }
        assert_eq!(Texts::new([None::<&str>; 3]).get(2), None);
    }

    #[test]
    fn a_packed_lifecycle_op_checkpoints_as_its_fields() {
        for (app, user_id, login, cid) in [
            (
                Some("aws-prod"),
                Some("u-1"),
                Some("rita@corp.example"),
                Some("c-1"),
            ),
            (None, None, None, None),
            (Some("wiki"), None, Some("bob"), None),
        ] {
            let fields = LifecycleOpFields {
                stage: Stage::Leaver,
                outcome: Outcome::Succeeded,
                time: Ts(5),
                app: app.map(str::to_string),
                user_id: user_id.map(str::to_string),
                user_login: login.map(str::to_string),
                action: "deactivate".into(),
                correlation_id: cid.map(str::to_string),
                trigger_time: Some(Ts(1)),
                first_attempt_time: None,
                first_success: Some(Ts(6)),
                groups: vec!["admins".into()],
            };
            let op = LifecycleOp::from(fields.clone());
            assert_eq!(
                (op.app(), op.user_id(), op.user_login(), op.correlation_id()),
                (app, user_id, login, cid)
            );
            assert_eq!(op.action(), "deactivate");
            let saved = serde_json::to_string(&op).expect("serializes");
            assert_eq!(saved, serde_json::to_string(&fields).expect("serializes"));
            let restored: LifecycleOp = serde_json::from_str(&saved).expect("deserializes");
            assert_eq!(restored, op);
        }
    }

    /// A leaver known first by id and then, on the IdP's retry, by login too is one episode
    /// whose alert keeps the name it opened with (QA: the page for `u-42` was resolved and a
    /// second one sent for the login, while the account was still live).
    #[test]
    fn an_episode_s_alert_name_holds_when_a_later_record_adds_the_login() {
        let mut episodes = super::Episodes::new(super::super::Policy::from_config(
            &crate::config::SloConfig::default(),
        ));
        let op = |login: Option<&str>, cid: &str, time: i64| {
            LifecycleOp::from(LifecycleOpFields {
                stage: Stage::Leaver,
                outcome: Outcome::Failed,
                time: Ts(time),
                app: Some("vault".into()),
                user_id: Some("u-42".into()),
                user_login: login.map(str::to_string),
                action: "deactivate".into(),
                correlation_id: Some(cid.into()),
                trigger_time: None,
                first_attempt_time: Some(Ts(time)),
                first_success: None,
                groups: vec![],
            })
        };
        let mut out = Vec::new();
        episodes.on_operation(&op(None, "L1", 1), &mut out);
        episodes.on_operation(&op(Some("ada.admin@corp.example"), "L2", 2), &mut out);
        let open = episodes.open_episodes();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].user(), "ada.admin@corp.example");
        assert_eq!(open[0].alert_user(), "u-42");
        assert_eq!(open[0].correlation_ids, ["L1", "L2"]);
    }

    /// A joiner older than an open episode (logs appended to a store that carried the episode
    /// over, and overlapping it) leaves it open: only a joiner after it cancels it (QA
    /// helper-57: a never-disabled high-risk leaver was cancelled and left out of the pack).
    #[test]
    fn only_a_joiner_after_an_episode_began_cancels_it() {
        let mut episodes = super::Episodes::new(super::super::Policy::from_config(
            &crate::config::SloConfig::default(),
        ));
        let op = |stage: Stage, outcome: Outcome, time: i64| {
            LifecycleOp::from(LifecycleOpFields {
                stage,
                outcome,
                time: Ts(time),
                app: Some("aws-prod".into()),
                user_id: Some("u-581".into()),
                user_login: Some("user581@corp.example".into()),
                action: "deactivate".into(),
                correlation_id: Some(format!("c-{time}")),
                trigger_time: None,
                first_attempt_time: Some(Ts(time)),
                first_success: None,
                groups: vec![],
            })
        };
        let mut out = Vec::new();
        episodes.on_operation(&op(Stage::Leaver, Outcome::Failed, 1_000), &mut out);
        episodes.on_operation(&op(Stage::Joiner, Outcome::Succeeded, 984), &mut out);
        assert_eq!(episodes.open_episodes().len(), 1, "{out:?}");
        assert!(out.is_empty(), "{out:?}");
        episodes.on_operation(&op(Stage::Joiner, Outcome::Succeeded, 1_001), &mut out);
        assert!(episodes.open_episodes().is_empty());
        assert!(
            matches!(&out[..], [super::LeaverEvent::Ended(e)] if e.state == super::EpisodeState::Cancelled),
            "{out:?}"
        );
    }

    /// A restart with a changed high-risk policy decides again for the episodes still open,
    /// on what the first decision saw (not a login learned since), as a replay of the same
    /// logs with the new config would; an episode from a checkpoint that did not keep it
    /// keeps its decision. It kept the old one: an app made high-risk to page on its overdue
    /// leavers paged on none of those already open (QA helper-59).
    #[test]
    fn a_restart_decides_again_for_open_episodes_with_the_policy_now() {
        use crate::config::{HighRiskPolicy, SloConfig};
        let policy = |apps: &[&str], users: &[&str], deadline| {
            let mut slo = SloConfig::default();
            slo.high_risk.push(HighRiskPolicy {
                apps: apps.iter().map(|a| a.to_string()).collect(),
                users: users.iter().map(|u| u.to_string()).collect(),
                groups: vec!["Domain Admins".into()],
                disable_within_secs: deadline,
            });
            super::super::Policy::from_config(&slo)
        };
        let op = |app: &str, login: Option<&str>, groups: &[&str], time: i64| {
            LifecycleOp::from(LifecycleOpFields {
                stage: Stage::Leaver,
                outcome: Outcome::Failed,
                time: Ts(time),
                app: Some(app.into()),
                user_id: Some(format!("id-{app}")),
                user_login: login.map(str::to_string),
                action: "deactivate".into(),
                correlation_id: Some(format!("c-{app}-{time}")),
                trigger_time: None,
                first_attempt_time: Some(Ts(time)),
                first_success: None,
                groups: groups.iter().map(|g| g.to_string()).collect(),
            })
        };
        let mut episodes = super::Episodes::new(policy(&["aws-prod"], &["root*"], 900));
        let mut out = Vec::new();
        episodes.on_operation(&op("vault", None, &[], 1), &mut out);
        episodes.on_operation(&op("vault", Some("root@corp.example"), &[], 2), &mut out);
        episodes.on_operation(&op("wiki", None, &["Domain Admins"], 3), &mut out);
        episodes.on_operation(&op("aws-prod", None, &[], 4), &mut out);
        let saved = serde_json::to_string(&episodes.snapshot()).unwrap();
        let decisions = |episodes: &super::Episodes| {
            let mut all: Vec<(String, bool, u64)> = (episodes.open_episodes().iter())
                .map(|e| (e.app.clone(), e.high_risk, e.deadline_seconds))
                .collect();
            all.sort();
            all
        };
        let restore = |policy, saved: &str| {
            super::Episodes::restore(policy, serde_json::from_str(saved).unwrap())
        };
        let standard = SloConfig::default().standard_disable_within_secs;
        let before = [
            ("aws-prod".to_string(), true, 900),
            ("vault".to_string(), false, standard),
            ("wiki".to_string(), true, 900),
        ];
        assert_eq!(decisions(&episodes), before);
        // The same policy: the same decisions, though vault's login now matches `root*`.
        let same = restore(policy(&["aws-prod"], &["root*"], 900), &saved);
        assert_eq!(decisions(&same), before);
        // vault made high-risk, aws-prod not, the deadline 600 s.
        let changed = restore(policy(&["vault"], &[], 600), &saved);
        let after = [
            ("aws-prod".to_string(), false, standard),
            ("vault".to_string(), true, 600),
            ("wiki".to_string(), true, 600),
        ];
        assert_eq!(decisions(&changed), after);
        // A checkpoint from before the decision's inputs were kept: as it was.
        let old = saved.replace("\"decided_on\"", "\"ignored\"");
        assert_ne!(old, saved);
        assert_eq!(
            decisions(&restore(policy(&["vault"], &[], 600), &old)),
            before
        );
    }

    /// An alias added across a restart makes two spellings one app: their pairs become one,
    /// keeping the older open episode, renamed with what it was decided on; one opened before
    /// the other spelling's disable is ended by it (kept open, it paged: helper-63).
    #[test]
    fn renamed_apps_merge_their_pairs_as_one_app_would_stand() {
        let mut episodes = super::Episodes::new(super::super::Policy::from_config(
            &crate::config::SloConfig::default(),
        ));
        let op_as = |stage: Stage, app: &str, user: &str, time: i64, success: bool| {
            LifecycleOp::from(LifecycleOpFields {
                stage,
                outcome: if success {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                },
                time: Ts(time),
                app: Some(app.into()),
                user_id: None,
                user_login: Some(format!("{user}@corp.example")),
                action: "deactivate".into(),
                correlation_id: Some(format!("c-{app}-{time}")),
                trigger_time: None,
                first_attempt_time: Some(Ts(time)),
                first_success: success.then_some(Ts(time)),
                groups: vec![],
            })
        };
        let op = |app: &str, user: &str, time: i64, success: bool| {
            op_as(Stage::Leaver, app, user, time, success)
        };
        let mut out = Vec::new();
        episodes.on_operation(&op("AWS Production", "carol", 5, false), &mut out);
        episodes.on_operation(&op("aws-prod", "carol", 3, false), &mut out);
        episodes.on_operation(&op("wiki", "carol", 4, false), &mut out);
        episodes.on_operation(&op("aws-prod", "dave", 6, false), &mut out);
        let disable = op("AWS Production", "dave", 7, true);
        episodes.on_operation(&disable, &mut out);
        episodes.on_close(&disable, &mut out);
        // erin's disable under one name ends the episode begun under the other before it,
        // though a rehire followed (helper-65).
        episodes.on_operation(&op("AWS Production", "erin", 10, false), &mut out);
        let disable = op("aws-prod", "erin", 11, true);
        episodes.on_operation(&disable, &mut out);
        episodes.on_close(&disable, &mut out);
        episodes.on_operation(
            &op_as(Stage::Joiner, "aws-prod", "erin", 12, true),
            &mut out,
        );
        // frank's leave under the other name after his disable stays open: whether a rehire
        // came between is not known, and a real leaver must not be dropped (helper-66).
        let disable = op("aws-prod", "frank", 13, true);
        episodes.on_operation(&disable, &mut out);
        episodes.on_close(&disable, &mut out);
        episodes.on_operation(&op("AWS Production", "frank", 14, false), &mut out);
        // greg's disable under one name was another account's (another user id under his
        // login): his episode under the other name stays open (helper-66).
        let with_id = |op: LifecycleOp, id: &str| {
            let mut fields = LifecycleOpFields::from(op);
            fields.user_id = Some(id.into());
            LifecycleOp::from(fields)
        };
        episodes.on_operation(
            &with_id(op("AWS Production", "greg", 20, false), "id-2"),
            &mut out,
        );
        let disable = with_id(op("aws-prod", "greg", 21, true), "id-1");
        episodes.on_operation(&disable, &mut out);
        episodes.on_close(&disable, &mut out);
        // hank was disabled twice under the other name, rehired between: his episode ends
        // at the first disable after it began, not the last (helper-68).
        episodes.on_operation(&op("AWS Production", "hank", 30, false), &mut out);
        for (time, stage) in [
            (31, Stage::Leaver),
            (32, Stage::Joiner),
            (33, Stage::Leaver),
        ] {
            let op = op_as(stage, "aws-prod", "hank", time, true);
            episodes.on_operation(&op, &mut out);
            if stage == Stage::Leaver {
                episodes.on_close(&op, &mut out);
            }
        }
        assert_eq!(episodes.open_episodes().len(), 8, "{out:?}");
        let mut state: super::EpisodesState =
            serde_json::from_str(&serde_json::to_string(&episodes.snapshot()).unwrap()).unwrap();
        let rename = |app: &str| (app == "AWS Production").then(|| "aws-prod".to_string());
        let mut ended = Vec::new();
        assert_eq!(state.rename_apps(&rename, &mut ended), 7);
        let ended: Vec<(String, Ts, EpisodeState, Option<Ts>)> = (ended.iter())
            .map(|e| (e.user().to_string(), e.initiated_at, e.state, e.disabled_at))
            .collect();
        assert_eq!(
            ended,
            [
                (
                    "carol@corp.example".into(),
                    Ts(5),
                    EpisodeState::Cancelled,
                    None
                ),
                (
                    "dave@corp.example".into(),
                    Ts(6),
                    EpisodeState::Disabled,
                    Some(Ts(7))
                ),
                (
                    "erin@corp.example".into(),
                    Ts(10),
                    EpisodeState::Disabled,
                    Some(Ts(11))
                ),
                (
                    "hank@corp.example".into(),
                    Ts(30),
                    EpisodeState::Disabled,
                    Some(Ts(31))
                ),
            ],
            "ended by the merge, with the rows that end them"
        );
        let restored = super::Episodes::restore(
            super::super::Policy::from_config(&crate::config::SloConfig::default()),
            state,
        );
        let open: Vec<(String, Ts, Option<String>, Vec<String>)> =
            (restored.open_episodes().iter())
                .map(|e| {
                    let decided = e.decided_on.as_ref().and_then(|d| d.app.clone());
                    (
                        e.app.clone(),
                        e.initiated_at,
                        decided,
                        e.correlation_ids.clone(),
                    )
                })
                .collect();
        let cids = |list: &[&str]| list.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            open,
            [
                (
                    "aws-prod".to_string(),
                    Ts(3),
                    Some("aws-prod".to_string()),
                    cids(&["c-aws-prod-3", "c-AWS Production-5"])
                ),
                (
                    "wiki".to_string(),
                    Ts(4),
                    Some("wiki".to_string()),
                    cids(&["c-wiki-4"])
                ),
                (
                    "aws-prod".to_string(),
                    Ts(14),
                    Some("aws-prod".to_string()),
                    cids(&["c-AWS Production-14"])
                ),
                (
                    "aws-prod".to_string(),
                    Ts(20),
                    Some("aws-prod".to_string()),
                    cids(&["c-AWS Production-20"])
                ),
            ]
        );
    }

    #[test]
    fn a_packed_request_gives_back_its_fields_and_checkpoints_as_before() {
        let cases = [
            (
                "rita@corp.example",
                Some("wiki"),
                Some("c-1"),
                "/scim/v2/Users/u-1",
            ),
            ("rita", None, Some("c-1"), "/x"),
            ("rita", Some("wiki"), None, ""),
            ("", Some(""), Some(""), "/ü"),
            ("svc", None, None, "/a/b"),
        ];
        for (principal, app, cid, path) in cases {
            let fields = RequestFields {
                time: Ts(7),
                principal: principal.to_string(),
                app: app.map(str::to_string),
                correlation_id: cid.map(str::to_string),
                method: Method::Patch,
                path: path.to_string(),
                status: 204,
            };
            let request = Request::new(Ts(7), principal, app, cid, Method::Patch, path, 204);
            assert_eq!(request.principal(), principal);
            assert_eq!(request.app(), app);
            assert_eq!(request.correlation_id(), cid);
            assert_eq!(request.path(), path);
            // The checkpointed form is the unpacked one, and reads back packed.
            let saved = serde_json::to_string(&request).expect("serializes");
            assert_eq!(saved, serde_json::to_string(&fields).expect("serializes"));
            let restored: Request = serde_json::from_str(&saved).expect("deserializes");
            assert_eq!(restored, request);
        }
    }
}
