//! Routes, the JSON extractor that turns every rejection into a JSON error, and the middleware that times, counts
//! and bounds each request.

use crate::api::*;
use crate::engine::Job;
use crate::error::ApiError;
use crate::Service;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Instant;

/// The committed OpenAPI document, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

pub fn router(svc: Arc<Service>) -> Router {
    let max_body = svc.cfg.limits.max_body;
    Router::new()
        .route("/v1/recommend", post(recommend))
        .route("/v1/items", post(items))
        .route("/v1/events", post(events))
        .route("/v1/admin/reload", post(reload))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(svc.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(svc)
}

/// `axum::Json` whose rejections are JSON errors with the reason.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rej) => {
                let status = rej.status();
                let code = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "not_json",
                    StatusCode::UNPROCESSABLE_ENTITY => "bad_fields",
                    _ => "bad_json",
                };
                Err(ApiError { status, code, message: rej.body_text() })
            }
        }
    }
}

async fn recommend(
    State(svc): State<Arc<Service>>,
    JsonBody(req): JsonBody<RecommendRequest>,
) -> Result<Json<RecommendResponse>, ApiError> {
    svc.ask(|reply| Job::Recommend(req, reply)).await.map(Json)
}

async fn events(
    State(svc): State<Arc<Service>>,
    JsonBody(req): JsonBody<EventsRequest>,
) -> Result<Json<EventsResponse>, ApiError> {
    svc.ask(|reply| Job::Events(req, reply)).await.map(Json)
}

async fn items(
    State(svc): State<Arc<Service>>,
    JsonBody(req): JsonBody<ItemsRequest>,
) -> Result<Json<ItemsResponse>, ApiError> {
    let max = svc.cfg.limits.max_items;
    if req.items.is_empty() || req.items.len() > max {
        return Err(ApiError::invalid(
            "bad_items",
            format!("items has {} entries; send 1 to {max} per request", req.items.len()),
        ));
    }
    // Decoding images and audio is CPU work: off the async workers and off the model thread.
    let svc2 = svc.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let limits = &svc2.cfg.limits;
        let mut tokens = 0usize;
        let mut items = Vec::with_capacity(req.items.len());
        for (i, it) in req.items.into_iter().enumerate() {
            let at = format!("items[{i}] (id {:?})", it.id);
            let item = svc2.decoders.request_item(it, &at, svc2.cfg.media_root.as_deref(), &svc2.default_domain)?;
            tokens += svc2.decoders.text_tokens(&item.prepared.text, &at)?;
            if tokens > limits.max_item_tokens {
                return Err(ApiError::too_large(
                    "too_much_text",
                    format!(
                        "items[0..={i}] already hold {tokens} text tokens; this server encodes at most {} per request \
                         (serve --max-item-tokens): send these items in smaller requests",
                        limits.max_item_tokens
                    ),
                ));
            }
            items.push(item);
        }
        Ok(items)
    })
    .await
    .map_err(|e| ApiError::internal(format!("decoding media: {e}")))??;
    svc.ask(|reply| Job::Items(decoded, reply)).await.map(Json)
}

/// `/v1/admin/*` answers only to `Authorization: Bearer TOKEN` with the token the server was started with
/// (compared in constant time); a server started without one has its admin routes closed.
fn check_admin(svc: &Service, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(token) = svc.cfg.admin_token.as_deref() else {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "admin_disabled",
            message: "admin routes are closed: start the server with --admin-token (or M6REC_ADMIN_TOKEN) and send \
                      `Authorization: Bearer TOKEN`; SIGHUP reloads the served checkpoint without one"
                .into(),
        });
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    if !same {
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "this admin route needs `Authorization: Bearer TOKEN` with the server's admin token".into(),
        });
    }
    Ok(())
}

async fn reload(
    State(svc): State<Arc<Service>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ReloadResponse>, ApiError> {
    check_admin(&svc, &headers)?;
    // The body is optional: empty means "re-read the served checkpoint".
    let req: ReloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("bad_json", format!("reload body: {e}")))?
    };
    svc.reload(req.checkpoint.map(std::path::PathBuf::from)).await.map(Json)
}

async fn healthz(State(svc): State<Arc<Service>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "model_generation": svc.metrics.generation.get(),
        "catalog_items": svc.metrics.catalog_items.get(),
        "users": svc.metrics.users.get(),
    });
    Json(body).into_response()
}

async fn metrics(State(svc): State<Arc<Service>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], svc.metrics.render()).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found("no_route", format!("no route {} {}; see GET /openapi.json", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{} is not allowed on {}; see GET /openapi.json", req.method(), req.uri().path()),
    }
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("the handler panicked; the server keeps running").into_response()
}

/// Times out slow requests (slow bodies included) and records the metrics of every request.
async fn observe(State(svc): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let start = Instant::now();
    let timeout = svc.cfg.limits.request_timeout;
    // A body declared larger than the limit is refused before any of it is read (else the server would wait for
    // 16 MiB of it, up to the request timeout, before saying so).
    let max_body = svc.cfg.limits.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        let resp = ApiError::too_large(
            "body_too_large",
            format!(
                "the body declares {} bytes; this server takes at most {max_body} (--max-body-mib)",
                declared.unwrap_or(0)
            ),
        )
        .into_response();
        svc.metrics.requests.with_label_values(&[route.as_str(), resp.status().as_str()]).inc();
        return resp;
    }
    let resp = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "timeout",
            message: format!("the request did not finish within {} s", timeout.as_secs_f64()),
        }
        .into_response(),
    };
    svc.metrics.latency.with_label_values(&[route.as_str()]).observe(start.elapsed().as_secs_f64());
    svc.metrics.requests.with_label_values(&[route.as_str(), resp.status().as_str()]).inc();
    resp
}
