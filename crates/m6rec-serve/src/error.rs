//! Errors: [`Error`] for starting the service, [`ApiError`] for answers to bad requests.

use crate::api::{ErrorBody, ErrorDetail};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;

/// Why the service could not start, reload or persist.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening the checkpoint, dataset or feature cache failed.
    /// (The cause is in the message, not a `source`, so that a printed error chain says it once.)
    #[error("loading the model: {0}")]
    Load(m6rec_recommender::Error),
    /// The state directory (journal, media) could not be read or written.
    #[error("state {path}: {reason}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("{0}")]
    Config(String),
}

impl From<m6rec_recommender::Error> for Error {
    fn from(e: m6rec_recommender::Error) -> Self {
        Error::Load(e)
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An HTTP error answer: a status and a JSON body `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// What was wrong, where, and the fix.
    pub message: String,
}

impl ApiError {
    /// 400 Bad Request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }
    /// 404 Not Found.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, code, message: message.into() }
    }
    /// 422 Unprocessable Entity: well-formed JSON whose values cannot be used.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, code, message: message.into() }
    }
    /// 413: the request asks for more work than this server takes in one request (split it).
    pub fn too_large(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, code, message: message.into() }
    }
    /// 500: a failure of the server, not the request.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message: message.into() }
    }
    /// 503: the model is not available (shutting down, reloading failed).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, code: "unavailable", message: message.into() }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<crate::api::BadId> for ApiError {
    fn from(e: crate::api::BadId) -> ApiError {
        ApiError::invalid("bad_id", e.0)
    }
}
