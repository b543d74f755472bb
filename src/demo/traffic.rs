//! A deterministic generator of JML provisioning traffic as an IdP orchestrator log (generic
//! JSON with a shared correlation ID) and an nginx `escape=json` gateway log.
//!
//! The mix follows what IAM teams see: joiners/movers/leavers 60/25/15, ~20 apps, retries on
//! 429, a few IdP-only and gateway-only operations, and — when `trouble` is on — the incidents
//! scimwatch exists for: an expired SCIM token (a burst of 401s), a 429 storm during a bulk
//! department move, 409s after renames, a high-risk leaver whose disable keeps failing, a
//! hand-made write with no IdP record, and a disabled user still calling the API.

use crate::time::{Ts, MICROS_PER_SEC};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::io::{self, Write};

/// What to generate.
#[derive(Debug, Clone)]
pub struct TrafficSpec {
    pub seed: u64,
    pub start: Ts,
    pub operations: u64,
    /// Mean seconds between operations.
    pub mean_gap_secs: f64,
    pub users: u64,
    pub apps: Vec<String>,
    /// Inject the incidents described in the module docs.
    pub trouble: bool,
    /// Seconds of traffic that stand for one hour of the incident schedule (3600 = real
    /// time; the live demo squeezes an hour into seconds).
    pub trouble_unit_secs: u64,
    /// Scales the seconds between a 429 and its retry (1 = the 2–21 s an IdP waits). The
    /// live demo squeezes them with its hours, inside its short join window: retries a real
    /// 2–21 s apart there were unattributed writes, and their operations failed as `rate_limited`.
    pub retry_gap_scale: f64,
    /// During an incident's window, the share of operations sent to its app (0 = the app's
    /// usual share): the live demo's few seconds of an expired token must hit enough requests
    /// to be seen, and some of its 429 storm's operations give up.
    pub incident_share: f64,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            seed: 7,
            start: Ts::from_secs(1_782_892_800), // 2026-07-01T08:00:00Z
            operations: 1500,
            mean_gap_secs: 19.0,
            users: 2000,
            apps: DEFAULT_APPS.iter().map(|s| s.to_string()).collect(),
            trouble: true,
            trouble_unit_secs: 3600,
            retry_gap_scale: 1.0,
            incident_share: 0.0,
        }
    }
}

pub const DEFAULT_APPS: &[&str] = &[
    "slack",
    "github",
    "jira",
    "aws-prod",
    "salesforce",
    "zoom",
    "notion",
    "figma",
    "datadog",
    "pagerduty",
    "okta-workflows",
    "box",
    "workday",
    "zendesk",
    "gitlab",
    "confluence",
    "snowflake",
    "tableau",
    "miro",
    "1password",
];

/// Counts of what was written, for the caller to print.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrafficSummary {
    pub operations: u64,
    pub idp_lines: u64,
    pub gateway_lines: u64,
    pub idp_bytes: u64,
    pub gateway_bytes: u64,
}

/// xorshift64*: deterministic across platforms, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Joiner,
    Mover,
    Leaver,
}

/// Writes the two logs. Lines of each file are in time order.
pub fn generate(
    spec: &TrafficSpec,
    idp: &mut dyn Write,
    gateway: &mut dyn Write,
) -> io::Result<TrafficSummary> {
    let mut rng = Rng::new(spec.seed);
    let mut summary = TrafficSummary::default();
    // Gateway lines are produced slightly out of order (retries, lags): hold them in a heap and
    // write those older than the current operation minus a margin.
    let mut pending: BinaryHeap<Reverse<(i64, u64, String)>> = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut now = spec.start.0;
    let hour = spec.trouble_unit_secs.max(1) as i64 * MICROS_PER_SEC;
    let mut line = String::with_capacity(512);
    let mut disabled: Vec<(String, String, i64)> = Vec::new();
    // A high-risk leaver whose disable keeps failing: aws-prod answers 403 every sync cycle.
    let mut stuck_cycles: Vec<i64> = if spec.trouble {
        (0..4i64)
            .rev()
            .map(|cycle| spec.start.0 + 3 * hour + cycle * 2 * hour / 3)
            .collect()
    } else {
        Vec::new()
    };
    for index in 0..spec.operations {
        let gap = -spec.mean_gap_secs * (1.0 - rng.unit()).ln();
        now += (gap * MICROS_PER_SEC as f64) as i64;
        while stuck_cycles.last().is_some_and(|t| *t <= now) {
            let t = stuck_cycles.pop().unwrap_or_default();
            let cid = format!(
                "stuck-admin-{}",
                (t - spec.start.0 - 3 * hour) / (2 * hour / 3).max(1)
            );
            line.clear();
            let _ = writeln!(
                line,
                r#"{{"ts":"{}","cid":"{cid}","action":"deactivate","app":"aws-prod","user":"ops-admin@corp.example","user_id":"u-admin1","result":"failure","error":"target answered 403"}}"#,
                Ts(t)
            );
            idp.write_all(line.as_bytes())?;
            summary.idp_lines += 1;
            summary.idp_bytes += line.len() as u64;
            push_gateway(
                &mut pending,
                &mut sequence,
                t + MICROS_PER_SEC,
                &cid,
                "PATCH",
                "/scim/v2/Users/u-admin1",
                403,
                "aws-prod",
                "",
                &mut rng,
            );
        }
        let since_start = now - spec.start.0;
        let kind = match rng.below(100) {
            0..=59 => Kind::Joiner,
            60..=84 => Kind::Mover,
            _ => Kind::Leaver,
        };
        let mut app = spec.apps[rng.below(spec.apps.len() as u64) as usize].as_str();
        let token_window = (2 * hour..2 * hour + 3 * hour / 4).contains(&since_start);
        let storm_window = (5 * hour..5 * hour + hour / 6).contains(&since_start);
        // (No draw at all with no share, so `generate`'s sets stay as they were.)
        if spec.trouble
            && spec.incident_share > 0.0
            && (token_window || storm_window)
            && rng.chance(spec.incident_share)
        {
            app = if token_window { "jira" } else { "github" };
        }
        let user_number = rng.below(spec.users);
        let user = format!("user{user_number}@corp.example");
        let user_id = format!("u-{user_number:06}");
        let cid = format!("{:016x}{:016x}", rng.next_u64(), index);

        // Trouble windows (hours after start): 401s in jira 2:00–2:45, 429s in github
        // 5:00–5:10 (with retries), 409s for some joiners all day.
        let token_expired = spec.trouble && app == "jira" && token_window;
        let rate_storm = spec.trouble && app == "github" && storm_window;

        let (action, method, path) = match kind {
            Kind::Joiner => ("create", "POST", "/scim/v2/Users".to_string()),
            Kind::Mover => {
                if rng.chance(0.4) {
                    (
                        "group_membership_change",
                        "PATCH",
                        format!("/scim/v2/Groups/g-{}", rng.below(50)),
                    )
                } else {
                    ("update", "PATCH", format!("/scim/v2/Users/{user_id}"))
                }
            }
            Kind::Leaver => ("deactivate", "PATCH", format!("/scim/v2/Users/{user_id}")),
        };
        let body = match kind {
            Kind::Joiner => format!(r#"{{\"userName\":\"{user}\",\"active\":true,\"password\":\"Init-{:x}\"}}"#, rng.next_u64()),
            Kind::Leaver => r#"{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[{\"op\":\"replace\",\"value\":{\"active\":false}}]}"#.to_string(),
            Kind::Mover => r#"{\"Operations\":[{\"op\":\"replace\",\"path\":\"title\",\"value\":\"Engineer\"}]}"#.to_string(),
        };
        let final_status: u16 = if token_expired {
            401
        } else if rate_storm && spec.incident_share > 0.0 && rng.chance(0.5) {
            429 // the IdP gave up retrying
        } else if kind == Kind::Joiner && rng.chance(0.01) {
            409
        } else {
            match rng.below(1000) {
                0..=4 => 400,
                5..=6 => 404,
                7..=9 => 500,
                10 => 504,
                _ => {
                    if kind == Kind::Joiner {
                        201
                    } else {
                        200
                    }
                }
            }
        };
        let retried = rate_storm || rng.chance(0.05);
        let idp_only = !rate_storm && !token_expired && rng.chance(0.03);
        // "Do not trust a green status": now and then the IdP reports success for a request
        // the target refused.
        let idp_ok = (200..300).contains(&final_status) || rng.chance(0.2);

        // The IdP record.
        line.clear();
        let _ = write!(
            line,
            r#"{{"ts":"{}","cid":"{cid}","action":"{action}","app":"{app}","user":"{user}","user_id":"{user_id}","result":"{}""#,
            Ts(now),
            if idp_ok { "success" } else { "failure" }
        );
        if !idp_ok {
            let _ = write!(line, r#","error":"target answered {final_status}""#);
        }
        line.push_str("}\n");
        idp.write_all(line.as_bytes())?;
        summary.idp_lines += 1;
        summary.idp_bytes += line.len() as u64;
        summary.operations += 1;

        if !idp_only {
            let mut t = now + (50_000.0 + rng.unit() * 1_500_000.0) as i64;
            if retried {
                for _ in 0..(1 + rng.below(if rate_storm { 4 } else { 2 })) {
                    push_gateway(
                        &mut pending,
                        &mut sequence,
                        t,
                        &cid,
                        method,
                        &path,
                        429,
                        app,
                        &body,
                        &mut rng,
                    );
                    let wait = (2.0 + rng.unit() * 20.0) as i64 as f64 * spec.retry_gap_scale;
                    t += (wait * MICROS_PER_SEC as f64) as i64;
                }
            }
            push_gateway(
                &mut pending,
                &mut sequence,
                t,
                &cid,
                method,
                &path,
                final_status,
                app,
                &body,
                &mut rng,
            );
            if kind == Kind::Leaver && idp_ok && rng.chance(0.02) {
                disabled.push((user.clone(), app.to_string(), t));
            }
        }
        // Gateway-only writes: 2% of operations, a hand edit or another client.
        if rng.chance(0.02) {
            let t = now + rng.below(30) as i64 * MICROS_PER_SEC;
            let target = format!("/scim/v2/Users/u-{:06}", rng.below(spec.users));
            push_gateway(
                &mut pending,
                &mut sequence,
                t,
                "-",
                "PATCH",
                &target,
                200,
                app,
                r#"{\"Operations\":[{\"op\":\"replace\",\"path\":\"displayName\",\"value\":\"x\"}]}"#,
                &mut rng,
            );
        }
        // Retries land up to ~90 s after their operation: hold lines well past that.
        flush(
            &mut pending,
            now - 1800 * MICROS_PER_SEC,
            gateway,
            &mut summary,
        )?;
    }

    if spec.trouble {
        // A disabled user's API token still works.
        if let Some((user, app, at)) = disabled.first().cloned() {
            let t = at + hour / 3;
            let mut request = String::new();
            let _ = write!(
                request,
                r#"{{"time":"{}","xrid":"api-{:x}","method":"GET","uri":"/api/v2/export?access_token=tok_{:x}","status":200,"request_time":0.031,"remote_user":"{user}","app":"{app}"}}"#,
                Ts(t),
                rng.next_u64(),
                rng.next_u64()
            );
            sequence += 1;
            pending.push(Reverse((t, sequence, request)));
        }
    }
    flush(&mut pending, i64::MAX, gateway, &mut summary)?;
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn push_gateway(
    pending: &mut BinaryHeap<Reverse<(i64, u64, String)>>,
    sequence: &mut u64,
    time: i64,
    cid: &str,
    method: &str,
    path: &str,
    status: u16,
    app: &str,
    body: &str,
    rng: &mut Rng,
) {
    let mut line = String::with_capacity(400);
    let _ = write!(
        line,
        r#"{{"time":"{}","request_id":"{:016x}{:016x}","xrid":"{cid}","method":"{method}","uri":"{path}","status":{status},"request_time":{:.3},"remote_user":"scim-{app}","app":"{app}""#,
        Ts(time),
        rng.next_u64(),
        rng.next_u64(),
        0.02 + rng.unit() * 0.4
    );
    if !body.is_empty() {
        let _ = write!(line, r#","request_body":"{body}""#);
    }
    line.push('}');
    *sequence += 1;
    pending.push(Reverse((time, *sequence, line)));
}

fn flush(
    pending: &mut BinaryHeap<Reverse<(i64, u64, String)>>,
    before: i64,
    gateway: &mut dyn Write,
    summary: &mut TrafficSummary,
) -> io::Result<()> {
    while let Some(Reverse((time, _, _))) = pending.peek() {
        if *time >= before {
            break;
        }
        let Some(Reverse((_, _, line))) = pending.pop() else {
            break;
        };
        gateway.write_all(line.as_bytes())?;
        gateway.write_all(b"\n")?;
        summary.gateway_lines += 1;
        summary.gateway_bytes += line.len() as u64 + 1;
    }
    Ok(())
}
