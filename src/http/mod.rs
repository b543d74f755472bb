//! HTTP: `/metrics` for Prometheus, `/healthz` and `/readyz` for orchestrators, and the JSON
//! API on-call uses to follow a correlation ID from a page to the evidence. Loopback by
//! default; an optional bearer token (from an env var or a file, never the config text)
//! protects `/api/*`.

pub mod metrics;

use crate::daemon::status::LiveStatus;
use crate::judge::Operation;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics::Metrics;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most recent operations by correlation ID, for `/api/v1/operations/{id}`.
#[derive(Default)]
pub struct RecentOperations {
    /// Keyed hashing (ahash): IDs come from logs. Each ID is stored once, shared with `order`.
    by_id: crate::model::FastMap<Arc<str>, Arc<Operation>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl RecentOperations {
    pub fn with_capacity(capacity: usize) -> RecentOperations {
        RecentOperations {
            capacity: capacity.max(1),
            ..RecentOperations::default()
        }
    }

    pub fn insert(&mut self, operation: Arc<Operation>) {
        let Some(id) = operation.correlation_id.as_deref() else {
            return;
        };
        if let Some(slot) = self.by_id.get_mut(id) {
            *slot = operation;
            return;
        }
        let id: Arc<str> = Arc::from(id);
        self.by_id.insert(id.clone(), operation);
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Operation>> {
        self.by_id.get(id).cloned()
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub status: Arc<Mutex<LiveStatus>>,
    pub operations: Arc<Mutex<RecentOperations>>,
    pub token: Option<Arc<str>>,
}

/// The bearer token for `/api/*`, from `server.api_token_env` or `server.api_token_file`.
/// A token asked for but empty is an error: taken as "no token", it left `/api/v1` open.
pub fn api_token(config: &crate::config::Config) -> anyhow::Result<Option<String>> {
    let (key, value) = if let Some(var) = &config.server.api_token_env {
        let value = crate::config::env_secret(var)
            .map_err(|wrong| anyhow::anyhow!("server.api_token_env: {wrong}"))?;
        ("server.api_token_env", value)
    } else if let Some(file) = &config.server.api_token_file {
        let value = std::fs::read_to_string(file).map_err(|e| {
            anyhow::anyhow!("server.api_token_file: cannot read {}: {e}", file.display())
        })?;
        ("server.api_token_file", value)
    } else {
        return Ok(None);
    };
    let token = value.trim();
    if token.is_empty() {
        anyhow::bail!(
            "{key}: the token is empty, which would leave /api/v1 open; give it a token, or \
             remove {key} to serve the API without one"
        );
    }
    Ok(Some(token.to_string()))
}

/// What `GET /` answers: where to look (a person's first `curl` got an empty 404).
const INDEX: &str = "scimwatch\n\
  /metrics                   Prometheus metrics\n\
  /healthz                   ok while the process runs\n\
  /readyz                    ok once the checkpoint is loaded and every source polled\n\
  /api/v1/slo                per-stage success over every window (JSON)\n\
  /api/v1/alerts             the alert conditions that hold now (JSON)\n\
  /api/v1/leavers/open       open leaver episodes, oldest first (JSON)\n\
  /api/v1/operations/{id}    one recent operation, end to end (JSON)\n\
  /api/v1/status             the daemon's own counters: lines, lines set aside, files, checkpoints (JSON)\n";

pub fn router(state: AppState) -> Router {
    // The token is checked before anything else looks at an `/api` request: before a path is
    // decoded, and for paths that do not exist (a 401, not a 404 that maps the API).
    let api = Router::new()
        .route("/v1/slo", get(slo))
        .route("/v1/alerts", get(alerts))
        .route("/v1/leavers/open", get(open_leavers))
        .route("/v1/operations/{id}", get(operation))
        .route("/v1/status", get(status))
        .fallback(|| async { no_such_endpoint() })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/", get(|| async { INDEX }))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .nest("/api", api)
        .fallback(not_found)
        .with_state(state)
}

/// What no route serves. Under `/api` (`/api/`, which the nested API's own fallback does not
/// see), the token first, as for the rest of the API: it was an empty 404 to anyone (QA
/// helper-55).
async fn not_found(State(state): State<AppState>, request: Request) -> Response {
    if request.uri().path().starts_with("/api") {
        if let Some(refusal) = denied(&state, request.headers()) {
            return refusal;
        }
        return no_such_endpoint();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// An API path that does not exist, to a client that gave the token.
fn no_such_endpoint() -> Response {
    let error = Json(json!({"error": "no such API endpoint"}));
    (StatusCode::NOT_FOUND, error).into_response()
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match denied(&state, request.headers()) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// Serves OpenMetrics to clients that ask for it (Prometheus does), and the classic text
/// format otherwise (`curl`, `promtool check metrics`), where a counter's HELP and TYPE carry
/// its `_total` name.
async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let body = state.metrics.encode();
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if wants_openmetrics {
        return (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        to_prometheus_text(&body),
    )
        .into_response()
}

/// OpenMetrics → the Prometheus text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(text) => out.push_str(&text),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.status.lock().map(|s| s.ready).unwrap_or(false);
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: loading the checkpoint or polling sources for the first time\n",
        )
            .into_response()
    }
}

/// Compares in constant time, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Some(401 response)` when the request lacks the configured bearer token.
fn denied(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.token else {
        return None;
    };
    // `Bearer` in any case, then one or more spaces (RFC 9110 §11.4).
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, credentials)| credentials.trim_start_matches(' '));
    if same(given.as_bytes(), token.as_bytes()) {
        None
    } else {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "missing or wrong bearer token"})),
            )
                .into_response(),
        )
    }
}

fn snapshot(state: &AppState) -> LiveStatus {
    state.status.lock().map(|s| s.clone()).unwrap_or_default()
}

async fn slo(State(state): State<AppState>) -> Response {
    let status = snapshot(&state);
    Json(json!({"as_of": status.clock, "windows_end": status.judged_until, "stages": status.slo}))
        .into_response()
}

/// The daemon's counters: what `/api/v1/slo`, `/alerts` and `/leavers/open` list is left to
/// them (not serialized with the status).
async fn status(State(state): State<AppState>) -> Response {
    Json(snapshot(&state)).into_response()
}

async fn alerts(State(state): State<AppState>) -> Response {
    let status = snapshot(&state);
    Json(json!({"as_of": status.clock, "alerts": status.alerts})).into_response()
}

async fn open_leavers(State(state): State<AppState>) -> Response {
    let status = snapshot(&state);
    Json(
        json!({"as_of": status.clock, "open": status.leavers_open, "leavers": status.open_leavers}),
    )
    .into_response()
}

async fn operation(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let found = state.operations.lock().ok().and_then(|ops| ops.get(&id));
    match found {
        Some(op) => {
            let mut body = serde_json::to_value(op.as_ref()).unwrap_or_default();
            if let Some(object) = body.as_object_mut() {
                object.insert("hint".into(), json!(op.hint()));
            }
            Json(body).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no operation with correlation ID {id:?}: unknown, older than the recent-operations window or than the daemon's last start (look in the Parquet operations table), or still inside its join window")})),
        )
            .into_response(),
    }
}

/// Connections served at once. A scrape, a dashboard and a few people on the API need a
/// handful; past this, new ones wait in the kernel's backlog, so a flood of connections cannot
/// take the file descriptors the daemon needs for its logs and its store.
pub const MAX_CONNECTIONS: usize = 256;
/// A client has this long to send a request's headers (and, between requests, the next
/// one's); then its connection is closed. Without it, connections that send a byte now and
/// then were held forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After `shutdown`, requests under way get this long to finish.
pub const DRAIN: Duration = Duration::from_secs(3);

/// Serves until `shutdown` resolves, then lets requests under way finish (for at most
/// [`DRAIN`]) and returns: a client that never finishes its request cannot hold the daemon up.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let router = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (closing, closed) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait, rather than spin on the error.
                    tracing::warn!(%error, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = closed.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, connection).await;
                }
            }
        });
    }
    let _ = closing.send(true);
    drop(listener);
    let _ = tokio::time::timeout(
        DRAIN + Duration::from_millis(500),
        slots.acquire_many(MAX_CONNECTIONS as u32),
    )
    .await;
    Ok(())
}
