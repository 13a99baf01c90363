//! New items' media, from a request (base64 bytes or a path under `--media-root`) or from the journal, decoded and
//! preprocessed off the model thread with the feature cache's settings.

use crate::api::ItemIn;
use crate::engine::NewItem;
use crate::error::ApiError;
use crate::journal::StoredItem;
use crate::model::Prepared;
use base64::Engine as _;
use m6rec_features::FeatureConfig;
use std::path::{Component, Path};

/// Largest side of a posted image, in pixels.
pub const MAX_POSTED_SIDE: u32 = 4096;

/// Decoders for one feature configuration.
#[derive(Debug)]
pub struct Decoders {
    image: Option<m6rec_image::Preprocessor>,
    mel: Option<m6rec_audio::MelSpectrogram>,
    /// The text encoder's tokenizer (models that read text): what a request's text will cost.
    tokenizer: Option<m6rec_text::TextTokenizer>,
    /// Longest title + text of one item, in bytes.
    max_text: usize,
    /// Largest media file read from the media root, in bytes (a request body's bound).
    max_media: usize,
}

impl Decoders {
    /// From the feature cache's configuration (none: the model has no item tower; media are refused), the text
    /// encoder's tokenizer, the longest item text (bytes) a request may carry, and the largest media file read from
    /// the media root.
    pub fn new(
        cfg: Option<&FeatureConfig>,
        tokenizer: Option<m6rec_text::TextTokenizer>,
        max_text: usize,
        max_media: usize,
    ) -> Decoders {
        // Posted images are bounded tighter than the cache's (a 16k x 16k PNG is 1 GiB decoded).
        let image = cfg
            .map(|c| m6rec_image::ImageConfig { max_side: c.image.max_side.min(MAX_POSTED_SIDE), ..c.image.clone() });
        Decoders {
            image: image.and_then(|c| m6rec_image::Preprocessor::new(&c).ok()),
            mel: cfg.and_then(|c| m6rec_audio::MelSpectrogram::new(&c.audio).ok()),
            tokenizer,
            max_text,
            max_media,
        }
    }

    /// Text tokens the encoder will read for `text` (after truncation); 0 when the model reads no text.
    pub fn text_tokens(&self, text: &str, at: &str) -> Result<usize, ApiError> {
        match &self.tokenizer {
            Some(t) if !text.trim().is_empty() => t
                .count(text)
                .map_err(|e| ApiError::invalid("bad_item", format!("{at}: the text does not tokenize: {e}"))),
            _ => Ok(0),
        }
    }

    /// Decodes one request item (`at` names it in errors).
    pub fn request_item(
        &self,
        it: ItemIn,
        at: &str,
        media_root: Option<&Path>,
        default_domain: &str,
    ) -> Result<NewItem, ApiError> {
        if it.id.trim().is_empty() {
            return Err(ApiError::invalid("bad_item", format!("{at}: id is empty")));
        }
        crate::api::check_id(&format!("{at}: id"), &it.id)?;
        let text_len = it.title.len() + it.text.as_ref().map_or(0, String::len);
        if text_len > self.max_text {
            return Err(ApiError::too_large(
                "item_text_too_long",
                format!(
                    "{at}: title and text hold {text_len} bytes; this server takes at most {} per item \
                     (serve --max-item-text-kib); the encoder reads only the first tokens anyway, so shorten it",
                    self.max_text
                ),
            ));
        }
        let bytes =
            |b64: &Option<String>, path: &Option<String>, what: &str| self.media_bytes(b64, path, what, at, media_root);
        let image = bytes(&it.image_base64, &it.image_path, "image")?;
        let audio = bytes(&it.audio_base64, &it.audio_path, "audio")?;
        let pixels = match &image {
            None => None,
            Some((raw, _)) => Some(self.image(raw).map_err(|m| ApiError::invalid("bad_media", format!("{at}: {m}")))?),
        };
        let mel = match &audio {
            None => None,
            Some((raw, ext)) => {
                Some(self.audio(raw, ext).map_err(|m| ApiError::invalid("bad_media", format!("{at}: {m}")))?)
            }
        };
        let domain = it.domain.clone().filter(|d| !d.trim().is_empty()).unwrap_or_else(|| default_domain.to_string());
        let prepared = Prepared { text: text_of(&it.title, it.text.as_deref()), pixels, mel, domain };
        Ok(NewItem { meta: it, prepared, image, audio })
    }

    /// A request item's image or audio (`what`): decoded from base64, or read from a file under the media root
    /// (with its extension); `None` when the item has none.
    fn media_bytes(
        &self,
        b64: &Option<String>,
        path: &Option<String>,
        what: &str,
        at: &str,
        media_root: Option<&Path>,
    ) -> Result<Option<(Vec<u8>, String)>, ApiError> {
        match (b64, path) {
            (Some(_), Some(_)) => {
                Err(ApiError::invalid("bad_item", format!("{at}: give {what}_base64 or {what}_path, not both")))
            }
            (Some(b), None) => {
                let raw = base64::engine::general_purpose::STANDARD.decode(b.trim()).map_err(|e| {
                    ApiError::invalid("bad_media", format!("{at}: {what}_base64 is not valid base64 ({e})"))
                })?;
                Ok(Some((raw, "bin".to_string())))
            }
            (None, Some(p)) => {
                let root = media_root.ok_or_else(|| {
                    ApiError::invalid(
                        "media_path_disabled",
                        format!("{at}: {what}_path needs the server started with --media-root DIR; send {what}_base64 instead"),
                    )
                })?;
                let rel = Path::new(p);
                if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                    return Err(ApiError::invalid(
                        "bad_media",
                        format!("{at}: {what}_path {p:?} must be relative to the media root, without `..`"),
                    ));
                }
                // Resolved for real (a symlink out of the root is refused), a regular file (a FIFO would block
                // this thread forever), and no larger than a request body may be.
                let full = m6rec_data::media::resolve(root, p)
                    .map_err(|e| ApiError::invalid("bad_media", format!("{at}: {what}_path: {e} (the media root)")))?;
                let len = std::fs::metadata(&full).map(|m| m.len()).unwrap_or(u64::MAX);
                if len > self.max_media as u64 {
                    return Err(ApiError::too_large(
                        "media_too_large",
                        format!("{at}: {what}_path {p:?} holds {len} bytes; at most {} are read", self.max_media),
                    ));
                }
                let raw = std::fs::read(&full)
                    .map_err(|e| ApiError::invalid("bad_media", format!("{at}: {what}_path {p:?}: {e}")))?;
                let ext = rel.extension().and_then(|e| e.to_str()).unwrap_or("bin").to_ascii_lowercase();
                Ok(Some((raw, ext)))
            }
            (None, None) => Ok(None),
        }
    }

    /// An item from the journal; media that no longer decode are left out (with a message on stderr).
    pub fn stored_item(&self, s: &StoredItem, media: impl Fn(&str) -> std::path::PathBuf) -> Prepared {
        let read =
            |name: &Option<String>| name.as_ref().and_then(|n| std::fs::read(media(n)).ok().map(|b| (b, n.clone())));
        let pixels = read(&s.image).and_then(|(b, n)| {
            self.image(&b).map_err(|m| tracing::warn!("journal: item {}: image {n}: {m}", s.id)).ok()
        });
        let mel = read(&s.audio).and_then(|(b, n)| {
            let ext = Path::new(&n).extension().and_then(|e| e.to_str()).unwrap_or("bin").to_string();
            self.audio(&b, &ext).map_err(|m| tracing::warn!("journal: item {}: audio {n}: {m}", s.id)).ok()
        });
        Prepared { text: text_of(&s.title, s.text.as_deref()), pixels, mel, domain: s.domain.clone() }
    }

    fn image(&self, raw: &[u8]) -> Result<m6rec_image::Pixels, String> {
        let p = self.image.as_ref().ok_or("this model reads no images")?;
        p.bytes(raw).map_err(|e| format!("image does not decode: {e}"))
    }

    fn audio(&self, raw: &[u8], ext: &str) -> Result<m6rec_audio::LogMel, String> {
        let m = self.mel.as_ref().ok_or("this model reads no audio")?;
        let hint = (ext != "bin").then_some(ext);
        m.bytes(raw.to_vec(), hint).map_err(|e| format!("audio does not decode: {e}"))
    }
}

/// The text the feature cache embeds for an item: `title. text`.
fn text_of(title: &str, text: Option<&str>) -> String {
    let item = m6rec_data::Item {
        id: String::new(),
        domain: String::new(),
        title: title.to_string(),
        text: text.map(str::to_string),
        image: None,
        audio: None,
    };
    m6rec_features::item_text(&item)
}
