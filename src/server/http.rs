//! The HTTP routes: `/validate` and `/mutate` on the webhook listener, `/livez`, `/readyz` and `/metrics`
//! on the admin listener. Handlers only read the body, call `admission::answer`, log and count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::Semaphore;

use crate::admission::{self, Answer, Webhook};
use crate::core::Policy;
use crate::core::{Outcome, show, show_user};
use crate::metrics::Metrics;

/// Bodies above this size are answered on the blocking pool: parsing a 1 MiB Workflow takes long
/// enough to stall other connections on the same runtime thread.
const INLINE_BODY_BYTES: usize = 128 * 1024;

/// The API server sends a review's body at once; a client trickling one in would otherwise hold a
/// large-review slot (and memory) for as long as it likes.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the handlers share.
pub struct AppState {
    pub policy: Policy,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// True once both listeners are bound, false again from the moment shutdown begins.
    pub ready: AtomicBool,
    /// Large reviews read or parsed at once (see [`AppState::large_review_slots`]).
    pub large_reviews: Semaphore,
}

impl AppState {
    pub fn new(policy: Policy, metrics: Metrics, max_body_bytes: usize) -> AppState {
        AppState {
            policy,
            metrics,
            max_body_bytes,
            ready: AtomicBool::new(false),
            large_reviews: Semaphore::new(AppState::large_review_slots()),
        }
    }

    /// Two per core, so one large review can be read while another is parsed.
    pub fn large_review_slots() -> usize {
        2 * std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

/// The webhook routes (served over TLS).
pub fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/validate",
            post(|s: State<Arc<AppState>>, r: Request| review(s, Webhook::Validate, r))
                .fallback(method_not_allowed),
        )
        .route(
            "/mutate",
            post(|s: State<Arc<AppState>>, r: Request| review(s, Webhook::Mutate, r))
                .fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(state)
}

/// What the admin listener reports: readiness and the metrics text. The webhook server and the
/// monitor each have one.
pub trait Admin: Send + Sync + 'static {
    fn ready(&self) -> bool;
    /// The OpenMetrics text exposition.
    fn metrics_text(&self) -> String;
}

impl Admin for AppState {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}

/// The admin routes (plain HTTP, for probes and Prometheus).
pub fn admin_router<S: Admin>(state: Arc<S>) -> Router {
    Router::new()
        .route(
            "/livez",
            get(|| async { "ok\n" }).fallback(method_not_allowed),
        )
        .route("/readyz", get(readyz::<S>).fallback(method_not_allowed))
        .route("/metrics", get(metrics::<S>).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(state)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        &format!("no such path: {}", show(uri.path())),
    )
}

async fn method_not_allowed(request: Request) -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!(
            "method {} is not allowed on {}",
            request.method(),
            show(request.uri().path())
        ),
    )
}

async fn readyz<S: Admin>(State(state): State<Arc<S>>) -> Response {
    if state.ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics<S: Admin>(State(state): State<Arc<S>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics_text(),
    )
        .into_response()
}

async fn review(
    State(state): State<Arc<AppState>>,
    webhook: Webhook,
    request: Request,
) -> Response {
    let started = Instant::now();
    let limit = state.max_body_bytes;
    let bad = |status: StatusCode, message: String| {
        state.metrics.invalid(webhook, started.elapsed());
        tracing::warn!(webhook = webhook.as_str(), status = status.as_u16(), error = %message, "bad admission request");
        json_error(status, &message)
    };

    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than the limit of {limit} bytes"),
        );
    }
    // A large review waits for a slot before its body is read, and keeps it until answered: memory
    // stays bounded by the slots, not by the number of connections, and parses do not crowd the
    // cores. Meanwhile its bytes wait in the kernel under TCP flow control. A body of unknown length
    // (chunked; the API server never sends one) counts as large.
    let large = declared.is_none_or(|n| n > INLINE_BODY_BYTES as u64);
    let _slot = if large {
        // The semaphore is never closed, so acquiring only waits.
        let Ok(slot) = state.large_reviews.acquire().await else {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        };
        Some(slot)
    } else {
        None
    };
    let body: Body = request.into_body();
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await;
    let Ok(read) = read else {
        return bad(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        );
    };
    let bytes = match read {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return bad(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body is larger than the limit of {limit} bytes"),
            );
        }
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}"),
            );
        }
    };

    let answered = if bytes.len() <= INLINE_BODY_BYTES {
        admission::answer(&state.policy, webhook, &bytes, SystemTime::now())
    } else {
        let state = state.clone();
        match tokio::task::spawn_blocking(move || {
            admission::answer(&state.policy, webhook, &bytes, SystemTime::now())
        })
        .await
        {
            Ok(answered) => answered,
            Err(e) => {
                tracing::error!(error = %e, "review task failed");
                return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        }
    };
    match answered {
        Ok(answer) => {
            let elapsed = started.elapsed();
            state.metrics.observe(webhook, &answer.record, elapsed);
            log_answer(webhook, &answer, elapsed);
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                answer.body,
            )
                .into_response()
        }
        Err(e) => bad(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// One line per stage change, denial or warning at info; everything else (mostly the Argo controller's
/// status writes, and the mutating webhook's stamping) at debug.
fn log_answer(webhook: Webhook, answer: &Answer, elapsed: std::time::Duration) {
    let r = &answer.record;
    // The validating webhook owns the decision, so it logs the change; the mutating one only its warnings.
    let notable = match webhook {
        Webhook::Validate => r.stage_changed || r.decision != Outcome::Allowed || r.warnings > 0,
        Webhook::Mutate => r.warnings > 0,
    };
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                $level,
                webhook = webhook.as_str(),
                uid = %show(&r.uid),
                workflow = %show(&r.workflow),
                user = %show_user(&r.user),
                operation = r.operation.as_str(),
                transition = %r.transition,
                decision = r.decision.as_str(),
                reason = r.reason.map(|x| x.code()).unwrap_or("-"),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "{}",
                if r.message.is_empty() { "admission" } else { r.message.as_str() }
            )
        };
    }
    if notable {
        emit!(tracing::Level::INFO);
    } else {
        emit!(tracing::Level::DEBUG);
    }
}
