//! The JSON bodies of the HTTP API (documented in `docs/openapi.json`).

use serde::{Deserialize, Serialize};

/// `POST /v1/recommend`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// A known user: their history (training data plus events posted since) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// A new user's history, oldest first (item ids). Exactly one of `user_id` and `history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<String>>,
    /// How many items. Default 10.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Leave out items already in the history. Default true.
    #[serde(default = "default_true")]
    pub exclude_seen: bool,
    /// Only items of this domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Items never to recommend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocklist: Vec<String>,
}

fn default_k() -> usize {
    10
}
fn default_true() -> bool {
    true
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Item id.
    pub item_id: String,
    /// Title.
    pub title: String,
    /// Domain.
    pub domain: String,
    /// Model score (higher is better; comparable within one response).
    pub score: f32,
}

/// Response of `POST /v1/recommend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendResponse {
    /// Best first.
    pub items: Vec<Recommendation>,
    /// Length of the history the model read (its last `max_len` items count).
    pub history_len: usize,
    /// Which checkpoint load answered (increments on every reload).
    pub model_generation: u64,
}

/// An item to add or update (`POST /v1/items`). Media come as base64 bytes or as a path under the server's
/// `--media-root`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    /// Item id (new, or an existing one to update).
    pub id: String,
    /// Title (the start of the text the text encoder reads).
    #[serde(default)]
    pub title: String,
    /// Domain; default: the catalog's first domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Free text (description, plot, categories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Image bytes (JPEG, PNG, WebP, GIF), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_base64: Option<String>,
    /// Image file, relative to `--media-root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_path: Option<String>,
    /// Audio bytes (WAV, FLAC, MP3, Ogg Vorbis), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_base64: Option<String>,
    /// Audio file, relative to `--media-root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_path: Option<String>,
}

/// `POST /v1/items`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemsRequest {
    /// Items to add or update.
    pub items: Vec<ItemIn>,
}

/// Response of `POST /v1/items`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemsResponse {
    /// New items.
    pub added: usize,
    /// Items that existed and were re-embedded.
    pub updated: usize,
    /// Catalog size after the change.
    pub catalog_size: usize,
}

/// `POST /v1/events`: interactions of one user, oldest first, appended to their history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    /// The user (a new id creates the user).
    pub user_id: String,
    /// Item ids, oldest first.
    pub items: Vec<String>,
}

/// Response of `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsResponse {
    /// The user.
    pub user_id: String,
    /// Length of their history now.
    pub history_len: usize,
}

/// `POST /v1/admin/reload`: load a checkpoint (default: the one served, re-read) beside the current one and swap.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// Checkpoint directory; default the one given at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// Response of `POST /v1/admin/reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// Generation now serving.
    pub model_generation: u64,
    /// Its checkpoint.
    pub checkpoint: String,
}

/// Every error body: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// See [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, for example `unknown_item`.
    pub code: String,
    /// What was wrong, where, and the fix.
    pub message: String,
}

/// Longest user or item id the service stores, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// An id [`check_id`] refused: the message says which id and why (the service answers it as a 422 `bad_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadId(pub String);

impl std::fmt::Display for BadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadId {}

/// A user or item id the service may store: not blank, at most [`MAX_ID_BYTES`], no control characters.
pub fn check_id(what: &str, id: &str) -> Result<(), BadId> {
    let bad = |why: String| Err(BadId(format!("{what}: {why}")));
    if id.trim().is_empty() {
        return bad("the id is empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return bad(format!("the id is {} bytes long; at most {MAX_ID_BYTES}", id.len()));
    }
    if id.chars().any(char::is_control) {
        return bad("the id holds a control character (such as NUL or a newline)".into());
    }
    Ok(())
}
