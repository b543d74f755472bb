//! Join: IdP records and gateway records that share a correlation ID become one operation, in
//! event time, whatever order the lines arrive in.
//!
//! Records are collected per key until the clock passes the key's deadline (its newest record
//! plus the join window): after that no record still inside the window can arrive, given that
//! lines are at most a window late. Then the key's records are split into operations — IdP
//! records within one window of each other are one operation, and each gateway write goes to
//! the operation whose span (first IdP record − window … last IdP record + window) holds it,
//! the nearest if several do. Writes that fit no operation are unattributed, one per line.
//!
//! Deterministic: the result depends only on the set of records, not on arrival order, and
//! keys expire in (deadline, key) order.

use crate::model::{GatewayRecord, IdpRecord, Origin};
use crate::time::Ts;
use std::collections::{BTreeSet, HashMap};

/// How an operation's records were matched (a Parquet column and an API field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinMethod {
    CorrelationId,
    ResourceId,
    UserName,
    /// Nothing was joined: an IdP record with no attempt, or an unattributed write.
    None,
}

impl JoinMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinMethod::CorrelationId => "correlation_id",
            JoinMethod::ResourceId => "resource_id",
            JoinMethod::UserName => "user_name",
            JoinMethod::None => "none",
        }
    }
}

/// What the join hands to the judge: an operation's IdP records and its attempts (both sorted
/// by time), or a single unattributed write (`idp` empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The shared key, when the records had one.
    pub correlation_id: Option<String>,
    pub join_method: JoinMethod,
    pub idp: Vec<IdpRecord>,
    pub attempts: Vec<GatewayRecord>,
}

impl Joined {
    /// The operation's time: its earliest IdP record, else its first attempt.
    pub fn time(&self) -> Ts {
        self.idp
            .first()
            .map(|r| r.time)
            .or_else(|| self.attempts.first().map(|a| a.time))
            .unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct Bucket {
    idp: Vec<IdpRecord>,
    gateway: Vec<GatewayRecord>,
    earliest: Ts,
    latest: Ts,
}

impl Bucket {
    fn deadline(&self, window: i64) -> Ts {
        Ts(self.latest.0.saturating_add(window))
    }
}

/// The join state machine.
#[derive(Debug)]
pub struct Joiner {
    window_micros: i64,
    buckets: HashMap<String, Bucket>,
    /// (deadline, key) of every bucket: what expires next.
    expiry: BTreeSet<(Ts, String)>,
    /// (earliest record time, key): how far back a pending operation can still reach.
    floor: BTreeSet<(Ts, String)>,
}

/// Keys for records without a correlation ID: unique per line, never colliding with a real ID.
fn keyless(origin: Origin) -> String {
    format!("\u{0}{}:{}:{}", origin.source, origin.file, origin.line)
}

fn is_keyless(key: &str) -> bool {
    key.starts_with('\u{0}')
}

impl Joiner {
    pub fn new(join_window_secs: u64) -> Joiner {
        Joiner {
            window_micros: (join_window_secs as i64).saturating_mul(crate::time::MICROS_PER_SEC),
            buckets: HashMap::new(),
            expiry: BTreeSet::new(),
            floor: BTreeSet::new(),
        }
    }

    /// How many keys are waiting for their window to pass.
    pub fn pending(&self) -> usize {
        self.buckets.len()
    }

    /// The earliest time any pending operation may still have: nothing older than this minus
    /// one window can come out of the join any more.
    pub fn pending_floor(&self) -> Option<Ts> {
        self.floor.first().map(|(t, _)| *t)
    }

    pub fn window_micros(&self) -> i64 {
        self.window_micros
    }

    pub fn push_idp(&mut self, record: IdpRecord) {
        let key = record
            .correlation_id
            .clone()
            .unwrap_or_else(|| keyless(record.origin));
        let time = record.time;
        self.bucket(key, time, |b| b.idp.push(record));
    }

    /// Adds a gateway SCIM write (reads and non-SCIM requests never reach the join).
    pub fn push_gateway(&mut self, record: GatewayRecord) {
        debug_assert!(record.write.is_some());
        let key = record
            .correlation_id
            .clone()
            .unwrap_or_else(|| keyless(record.origin));
        let time = record.time;
        self.bucket(key, time, |b| b.gateway.push(record));
    }

    fn bucket(&mut self, key: String, time: Ts, add: impl FnOnce(&mut Bucket)) {
        let window = self.window_micros;
        match self.buckets.get_mut(&key) {
            Some(bucket) => {
                let (old_deadline, old_earliest) = (bucket.deadline(window), bucket.earliest);
                add(bucket);
                bucket.earliest = bucket.earliest.min(time);
                bucket.latest = bucket.latest.max(time);
                if bucket.deadline(window) != old_deadline {
                    self.expiry.remove(&(old_deadline, key.clone()));
                    self.expiry.insert((bucket.deadline(window), key.clone()));
                }
                if bucket.earliest != old_earliest {
                    self.floor.remove(&(old_earliest, key.clone()));
                    self.floor.insert((bucket.earliest, key));
                }
            }
            None => {
                let mut bucket = Bucket {
                    earliest: time,
                    latest: time,
                    ..Bucket::default()
                };
                add(&mut bucket);
                self.expiry.insert((bucket.deadline(window), key.clone()));
                self.floor.insert((time, key.clone()));
                self.buckets.insert(key, bucket);
            }
        }
    }

    /// Settles every key whose deadline is before `clock`, in (deadline, key) order.
    pub fn expire(&mut self, clock: Ts, out: &mut Vec<Joined>) {
        while let Some((deadline, _)) = self.expiry.first() {
            if *deadline >= clock {
                break;
            }
            let Some((_, key)) = self.expiry.pop_first() else {
                break;
            };
            self.settle(key, out);
        }
    }

    /// Settles everything (end of replay input).
    pub fn expire_all(&mut self, out: &mut Vec<Joined>) {
        while let Some((_, key)) = self.expiry.pop_first() {
            self.settle(key, out);
        }
    }

    /// Drops the oldest pending key to respect a memory cap, settling it as if its window had
    /// passed. Returns false when nothing is pending.
    pub fn evict_oldest(&mut self, out: &mut Vec<Joined>) -> bool {
        let Some((_, key)) = self.floor.first().cloned() else {
            return false;
        };
        if let Some(bucket) = self.buckets.get(&key) {
            let deadline = bucket.deadline(self.window_micros);
            self.expiry.remove(&(deadline, key.clone()));
        }
        self.settle(key, out);
        true
    }

    fn settle(&mut self, key: String, out: &mut Vec<Joined>) {
        let Some(mut bucket) = self.buckets.remove(&key) else {
            return;
        };
        self.floor.remove(&(bucket.earliest, key.clone()));
        let correlation_id = (!is_keyless(&key)).then_some(key);
        bucket.idp.sort_by_key(|r| (r.time, origin_key(r.origin)));
        bucket
            .gateway
            .sort_by_key(|r| (r.time, origin_key(r.origin)));
        split_into_operations(correlation_id, bucket, self.window_micros, out);
    }
}

fn origin_key(origin: Origin) -> (u16, u32, u64) {
    (origin.source, origin.file, origin.line)
}

fn split_into_operations(
    correlation_id: Option<String>,
    bucket: Bucket,
    window: i64,
    out: &mut Vec<Joined>,
) {
    // IdP records within one window of an operation's first record are that operation.
    let mut operations: Vec<Joined> = Vec::new();
    for record in bucket.idp {
        match operations.last_mut() {
            Some(op) if record.time.0.saturating_sub(op.time().0) <= window => op.idp.push(record),
            _ => operations.push(Joined {
                correlation_id: correlation_id.clone(),
                join_method: JoinMethod::None,
                idp: vec![record],
                attempts: Vec::new(),
            }),
        }
    }
    let mut unattributed = Vec::new();
    for attempt in bucket.gateway {
        let t = attempt.time.0;
        let mut best: Option<(i64, usize)> = None;
        for (index, op) in operations.iter().enumerate() {
            let first = op.idp.first().map_or(0, |r| r.time.0);
            let last = op.idp.last().map_or(0, |r| r.time.0);
            if t >= first.saturating_sub(window) && t <= last.saturating_add(window) {
                let distance = t
                    .saturating_sub(first)
                    .saturating_abs()
                    .min(t.saturating_sub(last).saturating_abs());
                if best.is_none_or(|(d, _)| distance < d) {
                    best = Some((distance, index));
                }
            }
        }
        match best {
            Some((_, index)) => {
                let op = &mut operations[index];
                op.join_method = JoinMethod::CorrelationId;
                op.attempts.push(attempt);
            }
            None => unattributed.push(attempt),
        }
    }
    out.extend(operations);
    for attempt in unattributed {
        out.push(Joined {
            correlation_id: correlation_id.clone(),
            join_method: JoinMethod::None,
            idp: Vec::new(),
            attempts: vec![attempt],
        });
    }
}
