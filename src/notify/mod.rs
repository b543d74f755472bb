//! Notify: delivering the alert engine's notifications without ever stalling ingestion.
//!
//! The pipeline thread routes each notification (first matching `[[route]]`; with no routes,
//! every receiver), writes one outbox file per target, and hands it to a bounded queue with
//! `try_send` — a full queue dead-letters, it never blocks. A tokio task (`Dispatcher`) groups
//! deliveries per target and alert kind (group wait, group interval), sends them with a timeout,
//! retries network errors, 429 and 5xx with jittered exponential backoff, dead-letters what
//! cannot be delivered, and counts everything in `scimwatch_notifications_total`.

pub mod outbox;
pub mod render;
pub mod send;

use crate::alert::Notification;
use crate::config::{Config, RouteConfig};
use crate::http::metrics::{ChannelLabels, Metrics};
use outbox::{Delivery, Outbox};
use render::Links;
use send::{Channel, SendResult};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Delivery timing.
#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub retry_for: Duration,
    pub max_backoff: Duration,
}

impl DeliverySettings {
    pub fn from_config(config: &Config) -> DeliverySettings {
        let a = &config.alerting;
        DeliverySettings {
            group_wait: Duration::from_secs(a.group_wait_secs),
            group_interval: Duration::from_secs(a.group_interval_secs),
            retry_for: Duration::from_secs(a.retry_for_secs),
            max_backoff: Duration::from_secs(a.retry_max_backoff_secs),
        }
    }
}

fn count(metrics: &Metrics, channel: &str, result: &str, n: usize) {
    metrics
        .notifications
        .get_or_create(&ChannelLabels {
            channel: channel.into(),
            result: result.into(),
        })
        .inc_by(n as u64);
}

/// Whether a route's matchers all hold for a notification.
pub fn route_matches(route: &RouteConfig, notification: &Notification) -> bool {
    let c = &notification.condition;
    route.matchers.iter().all(|(key, want)| {
        let have = match key.as_str() {
            "alert" => Some(&c.alert),
            "severity" => Some(&c.severity),
            other => c.labels.get(other),
        };
        have == Some(want)
    })
}

/// The pipeline's side: route, persist, enqueue. Never blocks on the network.
pub struct Notifier {
    routes: Vec<RouteConfig>,
    /// Receiver name → its targets (`name/email`, `name/webhook`) and their channel kinds.
    targets: BTreeMap<String, Vec<(String, &'static str)>>,
    outbox: Outbox,
    queue: mpsc::Sender<Delivery>,
    metrics: Arc<Metrics>,
    next_id: u64,
}

impl Notifier {
    /// Builds every channel (reading credentials from their env vars or files), loads what the
    /// outbox still holds, and spawns the dispatcher on `runtime`.
    pub fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<Notifier> {
        // lettre's connection pool spawns its reaper task when built.
        let _runtime = runtime.enter();
        let timeout = Duration::from_secs(config.alerting.send_timeout_secs);
        let mut channels = BTreeMap::new();
        let mut targets: BTreeMap<String, Vec<(String, &'static str)>> = BTreeMap::new();
        for receiver in &config.receivers {
            for (target, channel) in send::channels(receiver, timeout)? {
                targets
                    .entry(receiver.name.clone())
                    .or_default()
                    .push((target.clone(), channel.kind()));
                channels.insert(target, channel);
            }
        }
        let outbox = Outbox::open(&config.storage.data_dir)?;
        let waiting = outbox.load();
        if !waiting.is_empty() {
            tracing::info!(
                count = waiting.len(),
                "Delivering notifications left in the outbox."
            );
        }
        let next_id = waiting
            .iter()
            .map(|d| d.id + 1)
            .max()
            .unwrap_or(0)
            .max(crate::daemon::wall_clock().0.max(0) as u64);
        let (queue, receiver) = mpsc::channel(config.alerting.queue_capacity);
        let dispatcher = Dispatcher {
            channels,
            groups: BTreeMap::new(),
            settings: DeliverySettings::from_config(config),
            links: Links {
                runbook: config.alerting.runbook_url.clone(),
                dashboard: config.alerting.dashboard_url.clone(),
                repeat_interval_secs: config.alerting.repeat_interval_secs,
            },
            outbox: outbox.clone(),
            metrics: metrics.clone(),
            rng: next_id | 1,
        };
        runtime.spawn(dispatcher.run(receiver, waiting));
        Ok(Notifier {
            routes: config.routes.clone(),
            targets,
            outbox,
            queue,
            metrics,
            next_id,
        })
    }

    /// The receiver a notification goes to: the first matching route's; with no routes at
    /// all, every receiver.
    fn receivers_for(&self, notification: &Notification) -> Vec<String> {
        if self.routes.is_empty() {
            return self.targets.keys().cloned().collect();
        }
        self.routes
            .iter()
            .find(|r| route_matches(r, notification))
            .map(|r| vec![r.receiver.clone()])
            .unwrap_or_default()
    }

    /// Routes, persists and queues one notification.
    pub fn submit(&mut self, notification: &Notification) {
        let receivers = self.receivers_for(notification);
        if receivers.is_empty() && !self.targets.is_empty() {
            tracing::info!(key = %notification.dedup_key, "No route matches this alert; it is only logged.");
        }
        for receiver in receivers {
            for (target, kind) in self.targets.get(&receiver).cloned().unwrap_or_default() {
                self.next_id += 1;
                let delivery = Delivery {
                    id: self.next_id,
                    target,
                    notification: notification.clone(),
                };
                if let Err(error) = self.outbox.put(&delivery) {
                    tracing::error!(%error, "Cannot write the outbox; delivering from memory only.");
                }
                match self.queue.try_send(delivery) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(delivery)) => {
                        count(&self.metrics, kind, "dropped", 1);
                        self.outbox.dead_letter(
                            &delivery,
                            notification.at,
                            "notification queue full (alerting.queue_capacity)",
                        );
                    }
                    // Shutting down: the outbox file delivers it at the next start.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
    }
}

/// Deliveries of one target and alert kind, sent together.
#[derive(Default)]
struct Group {
    items: Vec<Delivery>,
    ready_at: Option<Instant>,
    last_sent: Option<Instant>,
    attempts: u32,
    failing_since: Option<Instant>,
}

/// The delivery task.
pub struct Dispatcher {
    channels: BTreeMap<String, Channel>,
    groups: BTreeMap<(String, String), Group>,
    settings: DeliverySettings,
    links: Links,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    rng: u64,
}

impl Dispatcher {
    async fn run(mut self, mut queue: mpsc::Receiver<Delivery>, waiting: Vec<Delivery>) {
        let now = Instant::now();
        for delivery in waiting {
            self.add(delivery, now, true);
        }
        loop {
            let next = self.groups.values().filter_map(|g| g.ready_at).min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = queue.recv() => match received {
                    Some(delivery) => self.add(delivery, Instant::now(), false),
                    None => return, // shutting down: the outbox keeps what is left
                },
                _ = sleep => {}
            }
            self.flush(Instant::now()).await;
        }
    }

    fn add(&mut self, delivery: Delivery, now: Instant, immediately: bool) {
        if !self.channels.contains_key(&delivery.target) {
            self.outbox.dead_letter(
                &delivery,
                crate::daemon::wall_clock(),
                "its receiver is no longer configured",
            );
            return;
        }
        let key = (
            delivery.target.clone(),
            delivery.notification.condition.alert.clone(),
        );
        let group = self.groups.entry(key).or_default();
        // A newer notification of the same alert replaces a waiting one (firing then resolved
        // inside the group wait still sends both: the resolve must not be lost).
        group.items.retain(|d| {
            d.notification.dedup_key != delivery.notification.dedup_key
                || d.notification.kind != delivery.notification.kind
                || {
                    self.outbox.remove(d.id);
                    false
                }
        });
        group.items.push(delivery);
        if group.ready_at.is_none() {
            group.ready_at = Some(if immediately {
                now
            } else {
                match group.last_sent {
                    Some(last) => (last + self.settings.group_interval).max(now),
                    None => now + self.settings.group_wait,
                }
            });
        }
    }

    /// A jittered exponential backoff: 1 s, 2 s, 4 s … up to the maximum, each ±25%.
    fn backoff(&mut self, attempts: u32) -> Duration {
        let base = Duration::from_secs(1u64 << attempts.min(20).saturating_sub(1))
            .min(self.settings.max_backoff);
        // xorshift: deterministic enough, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = 0.75 + (self.rng % 1000) as f64 / 2000.0;
        base.mul_f64(jitter)
    }

    async fn flush(&mut self, now: Instant) {
        let ready: Vec<(String, String)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.ready_at.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in ready {
            self.send_group(&key).await;
        }
        self.groups.retain(|_, g| {
            !g.items.is_empty()
                || g.last_sent
                    .is_some_and(|l| l.elapsed() < Duration::from_secs(86_400))
        });
    }

    async fn send_group(&mut self, key: &(String, String)) {
        let Some(group) = self.groups.get(key) else {
            return;
        };
        let items = group.items.clone();
        let Some(channel) = self.channels.get(&key.0) else {
            return;
        };
        let kind = channel.kind();
        let receiver = key.0.split('/').next().unwrap_or(&key.0).to_string();
        let batch: Vec<Notification> = items.iter().map(|d| d.notification.clone()).collect();
        // Which items went out, and how the rest fared.
        let (sent, result) = match channel {
            Channel::Email(email) => {
                let result = email.send(&batch, &self.links).await;
                let sent = if result == SendResult::Sent {
                    items.len()
                } else {
                    0
                };
                (sent, result)
            }
            Channel::Webhook(webhook) => {
                let bodies = webhook.bodies(&receiver, &batch, &self.links);
                // PagerDuty takes one event per alert; the others one body for the batch.
                let per_item = bodies.len() == items.len() && bodies.len() > 1;
                let mut sent = 0;
                let mut result = SendResult::Sent;
                for body in &bodies {
                    result = webhook.post(body).await;
                    if result != SendResult::Sent {
                        break;
                    }
                    sent += if per_item { 1 } else { items.len() };
                }
                (sent.min(items.len()), result)
            }
        };
        let now = Instant::now();
        let wall = crate::daemon::wall_clock();
        for delivery in &items[..sent] {
            self.outbox.remove(delivery.id);
            tracing::info!(target_name = %delivery.target, key = %delivery.notification.dedup_key, kind = ?delivery.notification.kind, "Notification delivered.");
        }
        count(&self.metrics, kind, "sent", sent);
        let rest: Vec<Delivery> = items[sent..].to_vec();
        let backoff = if let SendResult::Retry(_, _) = &result {
            let attempts = self.groups.get(key).map_or(1, |g| g.attempts + 1);
            Some(self.backoff(attempts))
        } else {
            None
        };
        let settings = self.settings;
        let Some(group) = self.groups.get_mut(key) else {
            return;
        };
        // Keep only what was not sent (and anything that arrived meanwhile).
        let sent_ids: Vec<u64> = items[..sent].iter().map(|d| d.id).collect();
        group.items.retain(|d| !sent_ids.contains(&d.id));
        if sent > 0 {
            group.last_sent = Some(now);
        }
        match result {
            SendResult::Sent => {
                group.attempts = 0;
                group.failing_since = None;
                group.ready_at = if group.items.is_empty() {
                    None
                } else {
                    Some(now + settings.group_interval)
                };
            }
            SendResult::Retry(error, retry_after) => {
                let since = *group.failing_since.get_or_insert(now);
                group.attempts += 1;
                if now.duration_since(since) >= settings.retry_for {
                    for delivery in &rest {
                        self.outbox.dead_letter(
                            delivery,
                            wall,
                            &format!("gave up after {} attempts: {error}", group.attempts),
                        );
                    }
                    count(&self.metrics, kind, "failed", rest.len());
                    group.items.retain(|d| !rest.iter().any(|r| r.id == d.id));
                    group.attempts = 0;
                    group.failing_since = None;
                    group.ready_at = (!group.items.is_empty()).then_some(now);
                } else {
                    let wait = backoff
                        .unwrap_or(Duration::from_secs(1))
                        .max(retry_after.unwrap_or_default().min(settings.max_backoff));
                    tracing::warn!(target_name = %key.0, alert = %key.1, attempt = group.attempts, retry_in = ?wait, %error, "Notification failed; will retry.");
                    count(&self.metrics, kind, "retried", rest.len());
                    group.ready_at = Some(now + wait);
                }
            }
            SendResult::Permanent(error) => {
                for delivery in &rest {
                    self.outbox.dead_letter(delivery, wall, &error);
                }
                count(&self.metrics, kind, "failed", rest.len());
                group.items.retain(|d| !rest.iter().any(|r| r.id == d.id));
                group.attempts = 0;
                group.failing_since = None;
                group.ready_at = (!group.items.is_empty()).then_some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Condition, NotificationKind};
    use crate::time::Ts;

    fn notification(alert: &str, severity: &str, labels: &[(&str, &str)]) -> Notification {
        let condition = Condition {
            alert: alert.into(),
            severity: severity.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            summary: String::new(),
            details: vec![],
        };
        Notification {
            kind: NotificationKind::Firing,
            dedup_key: condition.dedup_key(),
            condition,
            firing_since: Ts::from_secs(0),
            at: Ts::from_secs(0),
        }
    }

    fn route(matchers: &[(&str, &str)], receiver: &str) -> RouteConfig {
        RouteConfig {
            matchers: matchers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            receiver: receiver.into(),
        }
    }

    #[test]
    fn routes_match_on_alert_stage_app_and_severity() {
        let routes = [
            route(&[("alert", "PostDisableActivity")], "security"),
            route(&[("app", "aws-prod"), ("severity", "page")], "cloud-oncall"),
            route(&[("severity", "page")], "iam-oncall"),
            route(&[], "iam-tickets"),
        ];
        let first = |n: &Notification| {
            routes
                .iter()
                .find(|r| route_matches(r, n))
                .map(|r| r.receiver.as_str())
        };
        assert_eq!(
            first(&notification(
                "PostDisableActivity",
                "page",
                &[("app", "aws-prod")]
            )),
            Some("security")
        );
        assert_eq!(
            first(&notification(
                "LeaverDisableOverdue",
                "page",
                &[("app", "aws-prod")]
            )),
            Some("cloud-oncall")
        );
        assert_eq!(
            first(&notification(
                "StageSuccessIncident",
                "page",
                &[("stage", "leaver")]
            )),
            Some("iam-oncall")
        );
        assert_eq!(
            first(&notification(
                "UnattributedWrites",
                "ticket",
                &[("app", "aws-prod")]
            )),
            Some("iam-tickets")
        );
    }
}
