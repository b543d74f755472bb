//! HTTP: `/metrics` for Prometheus, `/healthz` and `/readyz` for orchestrators, and the JSON
//! API on-call uses to follow a correlation ID from a page to the evidence. Loopback by
//! default; an optional bearer token (from an env var or a file, never the config text)
//! protects `/api/*`.

pub mod metrics;

use crate::daemon::status::LiveStatus;
use crate::judge::Operation;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics::Metrics;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

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
        let value = std::env::var(var).map_err(|_| {
            anyhow::anyhow!("server.api_token_env: environment variable {var} is not set")
        })?;
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

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/api/v1/slo", get(slo))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/leavers/open", get(open_leavers))
        .route("/api/v1/operations/{id}", get(operation))
        .with_state(state)
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
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
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

async fn slo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(response) = denied(&state, &headers) {
        return response;
    }
    let status = snapshot(&state);
    Json(json!({"as_of": status.clock, "stages": status.slo})).into_response()
}

async fn alerts(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(response) = denied(&state, &headers) {
        return response;
    }
    let status = snapshot(&state);
    Json(json!({"as_of": status.clock, "alerts": status.alerts})).into_response()
}

async fn open_leavers(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(response) = denied(&state, &headers) {
        return response;
    }
    let status = snapshot(&state);
    Json(
        json!({"as_of": status.clock, "open": status.leavers_open, "leavers": status.open_leavers}),
    )
    .into_response()
}

async fn operation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(response) = denied(&state, &headers) {
        return response;
    }
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
            Json(json!({"error": format!("no operation with correlation ID {id:?}: unknown, older than the recent-operations window, or still inside its join window")})),
        )
            .into_response(),
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
