//! The records a dataset is made of: catalog items and the interaction log, as plain columns.

/// One catalog item. Its dense index is its position in [`Dataset::items`](crate::Dataset::items).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item {
    /// The source's id (kept as text: ids are labels, not numbers).
    pub id: String,
    /// Domain, for example `movies` or `books`.
    pub domain: String,
    /// Human-readable title.
    pub title: String,
    /// Free text (description, genres, categories).
    pub text: Option<String>,
    /// Image path, relative to the dataset directory.
    pub image: Option<String>,
    /// Audio path, relative to the dataset directory.
    pub audio: Option<String>,
}

/// Interactions as columns, in source file order (the order that breaks timestamp ties).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Interactions {
    /// Dense user index per event.
    pub user: Vec<u32>,
    /// Dense item index per event.
    pub item: Vec<u32>,
    /// Timestamp per event (seconds, or positions for sources without time).
    pub timestamp: Vec<i64>,
    /// Event type per event (`None` when the source has none).
    pub event: Vec<Option<String>>,
}

impl Interactions {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.user.len()
    }
    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }
    /// Appends one event.
    pub fn push(&mut self, user: u32, item: u32, timestamp: i64, event: Option<String>) {
        self.user.push(user);
        self.item.push(item);
        self.timestamp.push(timestamp);
        self.event.push(event);
    }
}
