//! The channels: email over SMTP (lettre, rustls) and HTTP webhooks (reqwest, rustls). Each
//! send is bounded by a timeout and says whether a failure is worth retrying: network errors,
//! timeouts, 429 and 5xx (SMTP 4xx) are; other 4xx (SMTP 5xx) are not.

use super::render::{self, Links};
use crate::alert::Notification;
use crate::config::{EmailConfig, ReceiverConfig, SmtpTls, WebhookConfig, WebhookFormat};
use anyhow::{bail, Context};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// How a send ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    Sent,
    /// Worth trying again (after at least the given delay, when the receiver said so).
    Retry(String, Option<Duration>),
    /// Will never work as it is: dead-letter it.
    Permanent(String),
}

/// A secret from an environment variable or a file (trimmed), never from the config text;
/// `what` names its keys without their `_env` / `_file`.
fn secret(
    env: Option<&String>,
    file: Option<&std::path::PathBuf>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    // An empty secret is a mistake found now, not an AUTH failure at 03:00.
    if let Some(var) = env {
        let value = crate::config::env_secret(var)
            .map_err(|wrong| anyhow::anyhow!("{what}_env: {wrong}"))?;
        if value.trim().is_empty() {
            bail!("{what}_env: environment variable {var} is empty");
        }
        return Ok(Some(value.trim().to_string()));
    }
    if let Some(path) = file {
        let value = std::fs::read_to_string(path)
            .with_context(|| format!("{what}_file: cannot read {}", path.display()))?;
        if value.trim().is_empty() {
            bail!("{what}_file: {} is empty", path.display());
        }
        return Ok(Some(value.trim().to_string()));
    }
    Ok(None)
}

/// The PEM text of a `ca_file`: read, and holding at least one certificate (a PEM reader
/// takes a file with none, or a key, as an empty list, and every send would then fail on a
/// certificate it was meant to trust).
fn ca_bundle(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !pem.windows(marker.len()).any(|w| w == marker) {
        bail!("{} holds no PEM certificate", file.display());
    }
    Ok(pem)
}

/// An error and its causes, `outer: inner: …` (each once), with a hint where the cause is a
/// certificate no trusted root signed: the usual first-day problem with a corporate relay.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    if text.contains("UnknownIssuer") {
        text.push_str(" (a private CA's certificate? name its PEM file in ca_file)");
    }
    text
}

/// An SMTP relay. Each send opens its own connection (no pool: a send cut short by the
/// timeout left a pooled connection one reply behind, and a later refusal was read as the
/// previous command's success), and each recipient gets its own envelope, so one refused
/// address does not keep the page from the others.
pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: Duration,
    host: String,
    /// Per notification still being retried: which recipients have it, and the refusals so
    /// far, so a retry goes only to the rest (no second copy for those who have it).
    progress: std::sync::Mutex<std::collections::HashMap<u64, Progress>>,
}

pub(crate) fn host_port(url: &str) -> anyhow::Result<(String, Option<u16>)> {
    let rest = url
        .strip_prefix("smtps://")
        .or_else(|| url.strip_prefix("smtp://"))
        .context("smtp_url must start with smtp:// or smtps://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            let port = port
                .parse()
                .with_context(|| format!("smtp_url port {port:?} is not a number"))?;
            Ok((host.trim_matches(['[', ']']).to_string(), Some(port)))
        }
        _ if !authority.is_empty() => Ok((authority.to_string(), None)),
        _ => bail!("smtp_url has no host"),
    }
}

impl EmailChannel {
    pub fn new(
        name: &str,
        config: &EmailConfig,
        timeout: Duration,
    ) -> anyhow::Result<EmailChannel> {
        let what = |field: &str| format!("receiver {name:?} email.{field}");
        let (host, port) = host_port(&config.smtp_url).with_context(|| what("smtp_url"))?;
        // The public roots (webpki-roots), and a private CA's if `ca_file` names one; the
        // certificate must name `host`. Ports default as lettre's relays do: 587, 465, 25.
        let tls = || -> anyhow::Result<TlsParameters> {
            let mut parameters = TlsParameters::builder(host.clone());
            if let Some(file) = &config.ca_file {
                let pem = ca_bundle(file).with_context(|| what("ca_file"))?;
                let certificates = Certificate::from_pem(&pem)
                    .with_context(|| format!("{}: {}", what("ca_file"), file.display()))?;
                parameters = parameters.add_root_certificate(certificates);
            }
            parameters.build().with_context(|| what("smtp_url"))
        };
        let plain = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host);
        let mut builder = match config.tls {
            SmtpTls::None => plain,
            SmtpTls::Starttls => plain.port(587).tls(Tls::Required(tls()?)),
            SmtpTls::Implicit => plain.port(465).tls(Tls::Wrapper(tls()?)),
        };
        if let Some(port) = port {
            builder = builder.port(port);
        }
        let user = secret(
            config.username_env.as_ref(),
            config.username_file.as_ref(),
            &what("username"),
        )?;
        let password = secret(
            config.password_env.as_ref(),
            config.password_file.as_ref(),
            &what("password"),
        )?;
        match (user, password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user, password))
            }
            (None, None) => {}
            (Some(_), None) => bail!(
                "{}: a username without a password (set password_env or password_file)",
                what("password_file")
            ),
            (None, Some(_)) => bail!(
                "{}: a password without a username (set username_env or username_file)",
                what("username_file")
            ),
        }
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("{}: {:?} is not an address", what("from"), config.from))?;
        let to = config
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .with_context(|| format!("{}: {a:?} is not an address", what("to")))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let host_name = hostname();
        Ok(EmailChannel {
            transport: builder.timeout(Some(timeout)).build(),
            from,
            to,
            timeout,
            host: host_name,
            progress: Default::default(),
        })
    }

    pub async fn send(&self, batch: &[Notification], links: &Links) -> SendResult {
        // What each notification has reached, so a retry goes to whoever still lacks it and
        // carries only what they lack: kept per notification, not per batch (a batch that
        // grew during the backoff was a new batch, and those who had its first page got it
        // again inside the second).
        let keys: Vec<u64> = batch.iter().map(notification_key).collect();
        let mut progress: Vec<Progress> = {
            let mut all = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .map(|k| all.remove(k).unwrap_or_default())
                .collect()
        };
        // Recipients by what they still need (nearly always one group: everyone, everything).
        let mut needs: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
        for recipient in 0..self.to.len() {
            let lacking: Vec<usize> = (0..batch.len())
                .filter(|n| !progress[*n].done.contains(&recipient))
                .collect();
            if !lacking.is_empty() {
                needs.entry(lacking).or_default().push(recipient);
            }
        }
        let mut retry = None;
        for (lacking, recipients) in needs {
            let part: Vec<Notification> = lacking.iter().map(|n| batch[*n].clone()).collect();
            let mut message = Message::builder()
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .from(self.from.clone())
                .subject(render::email_subject(&part));
            for to in &self.to {
                message = message.to(to.clone());
            }
            let message = match message.body(render::email_body(&part, links, &self.host)) {
                Ok(m) => m,
                Err(e) => return SendResult::Permanent(format!("building the message: {e}")),
            };
            let bytes = message.formatted();
            for recipient in recipients {
                let to = &self.to[recipient];
                let envelope = match lettre::address::Envelope::new(
                    Some(self.from.email.clone()),
                    vec![to.email.clone()],
                ) {
                    Ok(envelope) => envelope,
                    Err(e) => return SendResult::Permanent(format!("the envelope to {to}: {e}")),
                };
                // lettre bounds only the connect: the whole dialogue gets a timeout of its own.
                let sent =
                    tokio::time::timeout(self.timeout, self.transport.send_raw(&envelope, &bytes));
                let done = match sent.await {
                    Ok(Ok(_)) => Some(None),
                    Ok(Err(e)) if e.is_permanent() => Some(Some(format!("{}: {e}", to.email))),
                    Ok(Err(e)) => {
                        retry = Some(format!("SMTP to {}: {}", to.email, with_causes(&e)));
                        None
                    }
                    Err(_) => {
                        retry = Some(format!(
                            "SMTP send to {} timed out after {:?}",
                            to.email, self.timeout
                        ));
                        None
                    }
                };
                if let Some(refused) = done {
                    for n in &lacking {
                        let p = &mut progress[*n];
                        p.done.push(recipient);
                        match &refused {
                            None => p.delivered += 1,
                            Some(why) => p.refused.push(why.clone()),
                        }
                    }
                }
            }
        }
        if let Some(reason) = retry {
            if let Ok(mut all) = self.progress.lock() {
                if all.len() >= 1024 {
                    all.clear(); // notifications given up on long ago; at worst a second copy
                }
                all.extend(keys.into_iter().zip(progress));
            }
            return SendResult::Retry(reason, None);
        }
        let delivered: usize = progress.iter().map(|p| p.delivered).sum();
        let mut refused: Vec<String> = progress.into_iter().flat_map(|p| p.refused).collect();
        refused.sort();
        refused.dedup();
        match (delivered, refused.is_empty()) {
            (_, true) => SendResult::Sent,
            (0, false) => SendResult::Permanent(format!(
                "SMTP: every recipient refused it: {}",
                refused.join("; ")
            )),
            (delivered, false) => {
                tracing::error!(
                    delivered,
                    refused = %refused.join("; "),
                    "A recipient refused the page; the others have it."
                );
                SendResult::Sent
            }
        }
    }
}

/// How far a notification's email has got: recipients done (delivered or refused for good),
/// how many were delivered, and the refusals.
#[derive(Debug, Default)]
struct Progress {
    done: Vec<usize>,
    delivered: usize,
    refused: Vec<String>,
}

/// A batch's identity across retries: its notifications' keys, kinds and times.
/// A webhook's URL, its path and query and each of their parts, and its routing key: longest
/// first, so a part is replaced only where its whole is not.
fn secrets_of(url: &str, routing_key: Option<&str>) -> Vec<String> {
    let mut secrets: Vec<String> = vec![url.to_string()];
    if let Ok(url) = reqwest::Url::parse(url) {
        let path = url.path().to_string();
        let query = url.query().unwrap_or_default().to_string();
        secrets.push(format!("{path}?{query}"));
        secrets.extend(
            path.split('/')
                .chain(query.split(['&', '=']))
                .map(str::to_string),
        );
        secrets.push(path);
        secrets.push(query);
    }
    secrets.extend(routing_key.map(str::to_string));
    secrets.retain(|s| s.len() >= 6);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

/// A notification's identity across retries.
fn notification_key(n: &Notification) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&n.dedup_key, n.at, n.firing_since).hash(&mut hasher);
    std::mem::discriminant(&n.kind).hash(&mut hasher);
    hasher.finish()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// An HTTP webhook in one of the formats receivers already understand.
pub struct WebhookChannel {
    client: reqwest::Client,
    url: String,
    format: WebhookFormat,
    routing_key: Option<String>,
    /// What never goes into an error text: see [`WebhookChannel::scrub`].
    secrets: Vec<String>,
}

impl WebhookChannel {
    pub fn new(
        name: &str,
        config: &WebhookConfig,
        timeout: Duration,
    ) -> anyhow::Result<WebhookChannel> {
        let what = |field: &str| format!("receiver {name:?} webhook.{field}");
        let url = match &config.url {
            Some(url) => url.clone(),
            None => secret(
                config.url_env.as_ref(),
                config.url_file.as_ref(),
                &what("url"),
            )?
            .context("webhook needs a url")?,
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            bail!("{}: not an http(s) URL", what("url"));
        }
        let routing_key = secret(
            config.routing_key_env.as_ref(),
            config.routing_key_file.as_ref(),
            &what("routing_key"),
        )?;
        if config.format == WebhookFormat::Pagerduty
            && routing_key.as_deref().is_none_or(str::is_empty)
        {
            bail!(
                "{}: PagerDuty needs a routing key",
                what("routing_key_file")
            );
        }
        let mut client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("scimwatch/", env!("CARGO_PKG_VERSION")));
        if let Some(file) = &config.ca_file {
            let pem = ca_bundle(file).with_context(|| what("ca_file"))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: {}", what("ca_file"), file.display()))?;
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client.build().context("building the HTTP client")?;
        let secrets = secrets_of(&url, routing_key.as_deref());
        Ok(WebhookChannel {
            client,
            url,
            format: config.format,
            routing_key,
            secrets,
        })
    }

    /// PagerDuty takes one event per alert; the others one body per batch.
    pub fn one_event_per_alert(&self) -> bool {
        self.format == WebhookFormat::Pagerduty
    }

    /// The bodies to POST for a batch: one per alert for PagerDuty, one in all otherwise.
    /// `still_firing`: the group's alerts sent firing and not resolved, outside the batch
    /// (Alertmanager's body carries them; the others do not).
    pub fn bodies(
        &self,
        receiver: &str,
        batch: &[Notification],
        still_firing: &[Notification],
        links: &Links,
    ) -> Vec<serde_json::Value> {
        match self.format {
            WebhookFormat::Alertmanager => {
                vec![render::alertmanager_webhook(
                    receiver,
                    batch,
                    still_firing,
                    links,
                )]
            }
            WebhookFormat::AlertmanagerApi => vec![render::alertmanager_api(batch, links)],
            WebhookFormat::Slack => vec![render::slack(batch, links)],
            WebhookFormat::Json => vec![render::own_json(receiver, batch, links)],
            WebhookFormat::Pagerduty => batch
                .iter()
                .map(|n| {
                    render::pagerduty_event(
                        n,
                        self.routing_key.as_deref().unwrap_or_default(),
                        links,
                    )
                })
                .collect(),
        }
    }

    /// `text` (a receiver's answer) without the URL or the routing key: a 404 page quoting
    /// the request path ("The requested URL /services/T000/B000/SECRET was not found") put
    /// Slack's secret URL in the log and the dead-letter file. Its path, its query and each of
    /// their parts are cut out too.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            text = text.replace(secret, "(url)");
        }
        text
    }

    pub async fn post(&self, body: &serde_json::Value) -> SendResult {
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        match response {
            // The URL may be a secret (Slack's): never put it in an error. reqwest's own
            // text is only "error sending request"; why is in its causes.
            Err(e) => {
                let e = e.without_url();
                let why = self.scrub(&with_causes(&e));
                SendResult::Retry(format!("HTTP: {why}"), None)
            }
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return SendResult::Sent;
                }
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, std::time::SystemTime::now()));
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(2000).collect();
                let detail = format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    self.scrub(&text).chars().take(200).collect::<String>()
                );
                if status.as_u16() == 429 || status.is_server_error() {
                    SendResult::Retry(detail, retry_after)
                } else {
                    SendResult::Permanent(detail)
                }
            }
        }
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): seconds, or an HTTP date (IMF-fixdate, `Sun, 06
/// Nov 1994 08:49:37 GMT`, the form senders must use), as the wait from `now`; a date already
/// past is no wait. Anything else is ignored (the backoff stands).
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // `Sun, 06 Nov 1994 08:49:37 GMT` is the Common Log Format's `06/Nov/1994:08:49:37 +0000`
    // spelt differently: read by the parser the gateway logs already use.
    let mut parts = value.split_ascii_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?.strip_suffix(',')?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() || day.len() != 2 || time.len() != 8 {
        return None;
    }
    let clf = format!("{day}/{month}/{year}:{time} +0000");
    let at = crate::time::parse_time(&clf, crate::time::TimeFormat::Clf).ok()?;
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(Duration::from_secs_f64((at.0 as f64 / 1e6 - now).max(0.0)))
}

/// One way a receiver is reached.
pub enum Channel {
    Email(Box<EmailChannel>),
    Webhook(WebhookChannel),
}

impl Channel {
    /// `email` or `webhook`: the `channel` label of `scimwatch_notifications_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Email(_) => "email",
            Channel::Webhook(_) => "webhook",
        }
    }
}

/// A receiver's channels, as `(target name, channel)`: `iam-oncall/email`, `iam-oncall/webhook`.
pub fn channels(
    receiver: &ReceiverConfig,
    timeout: Duration,
) -> anyhow::Result<Vec<(String, Channel)>> {
    let mut out = Vec::new();
    if let Some(email) = &receiver.email {
        out.push((
            format!("{}/email", receiver.name),
            Channel::Email(Box::new(EmailChannel::new(&receiver.name, email, timeout)?)),
        ));
    }
    if let Some(webhook) = &receiver.webhook {
        out.push((
            format!("{}/webhook", receiver.name),
            Channel::Webhook(WebhookChannel::new(&receiver.name, webhook, timeout)?),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::retry_after;
    use std::time::{Duration, UNIX_EPOCH};

    /// A receiver's error page quoting the request path put Slack's secret URL in the log and
    /// the dead-letter file (QA helper-14, F3).
    #[test]
    fn a_receiver_s_answer_is_quoted_without_the_url() {
        let config: crate::config::WebhookConfig = toml::from_str(
            "url = \"https://hooks.slack.example/services/T000/B000/SLACKSECRETXYZ?token=QSECRET123\"\nformat = \"slack\"",
        )
        .unwrap();
        let hook = super::WebhookChannel::new("slack", &config, Duration::from_secs(1)).unwrap();
        let page = "<html><p>The requested URL /services/T000/B000/SLACKSECRETXYZ was not \
                    found (https://hooks.slack.example/services/T000/B000/SLACKSECRETXYZ?token=QSECRET123, \
                    token QSECRET123, B000/SLACKSECRETXYZ)</p></html>";
        let scrubbed = hook.scrub(page);
        assert!(
            !scrubbed.contains("SLACKSECRETXYZ") && !scrubbed.contains("QSECRET123"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("was not found"), "{scrubbed}");
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        // 2026-12-05T12:00:00Z.
        let now = UNIX_EPOCH + Duration::from_secs(1_796_472_000);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Sat, 05 Dec 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        // Already past: no wait. Leap years and the year's end are the calendar's.
        assert_eq!(
            retry_after("Sat, 05 Dec 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("Fri, 01 Jan 2027 00:00:00 GMT", now),
            Some(Duration::from_secs((26 * 24 + 12) * 3600))
        );
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800); // 2024-02-29T00:00:00Z
        assert_eq!(
            retry_after("Fri, 01 Mar 2024 00:00:00 GMT", leap),
            Some(Duration::from_secs(86_400))
        );
        for bad in [
            "",
            "-5",
            "soon",
            "Sat, 05 Dec 2026 12:01:30 UTC",
            "Sat, 5 Dec 2026 12:01:30 GMT",
            "Sat, 05 Dez 2026 12:01:30 GMT",
            "Sat, 05 Dec 2026 24:01:30 GMT",
            "Sat, 05 Dec 2026 12:01 GMT",
            "Sat 05 Dec 2026 12:01:30 GMT",
            "Sat, 05 Dec 2026 12:01:30 GMT x",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }
}
