//! Events: what tranche tells the application about an upload's life.
//!
//! The state store writes each event into its outbox in the same atomic step
//! as the transition that causes it (the redb transaction, the Lua script), so
//! a crash can never keep a state change and lose its event, nor the other way
//! round. Writing them there, not in the core, is also what makes them
//! protocol-neutral: an upload written with tus goes through the same store
//! transitions as one written with API v1. A delivery task
//! ([`delivery::run`]) then hands every outbox entry to every sink that wants
//! it and removes it only once all of them took it: at-least-once delivery,
//! deduplicated by the consumer on [`Event::id`].
//!
//! What the outbox keeps is a [`StoredEvent`]: the kind and the record as it
//! stood after the transition. What sinks send is an [`Event`], rendered from
//! it at delivery (the file's URL depends on the front end's settings, not on
//! the state).

pub mod delivery;
pub mod sinks;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::upload::{Failure, Status, UploadRecord};

/// What happened to an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "upload.created")]
    Created,
    #[serde(rename = "upload.completed")]
    Completed,
    #[serde(rename = "upload.failed")]
    Failed,
    #[serde(rename = "upload.aborted")]
    Aborted,
    #[serde(rename = "upload.expired")]
    Expired,
    #[serde(rename = "file.deleted")]
    FileDeleted,
    /// Bytes arrived; at most one per upload per `events.progress_interval`.
    #[serde(rename = "upload.progress")]
    Progress,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Created,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::Aborted,
        EventKind::Expired,
        EventKind::FileDeleted,
        EventKind::Progress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "upload.created",
            EventKind::Completed => "upload.completed",
            EventKind::Failed => "upload.failed",
            EventKind::Aborted => "upload.aborted",
            EventKind::Expired => "upload.expired",
            EventKind::FileDeleted => "file.deleted",
            EventKind::Progress => "upload.progress",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The event of a record that changed from `before` to `after`, if any.
    /// Every backend applies this one rule (the Redis scripts in Lua), so
    /// that they emit alike.
    pub fn of_change(before: Status, after: Status) -> Option<EventKind> {
        match (before, after) {
            (Status::Assembling, Status::Completed) => Some(EventKind::Completed),
            (Status::Assembling, Status::Failed) => Some(EventKind::Failed),
            (b, Status::Aborted) if b != Status::Aborted => Some(EventKind::Aborted),
            _ => None,
        }
    }

    /// The event of a record deleted while it stood at `status`: a file
    /// (deleted by a request, or by the janitor at the end of its
    /// retention), or an upload that expired unfinished. A failed or aborted
    /// upload told its end already; its tombstone goes quietly.
    pub fn of_removal(status: Status) -> Option<EventKind> {
        match status {
            Status::Completed => Some(EventKind::FileDeleted),
            Status::Uploading => Some(EventKind::Expired),
            _ => None,
        }
    }
}

/// Events a store dropped because its outbox was full, since start (every
/// store of the process; the delivery task turns it into a metric). Redis
/// trims its stream by itself and is not counted.
pub static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Settings a state store needs to keep an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSettings {
    /// Most entries kept; past it the oldest are dropped (logged, counted).
    pub max_len: u64,
    /// At most one `upload.progress` per upload per this many ms, when bytes
    /// are counted; `None`: no progress events.
    pub progress_ms: Option<i64>,
}

/// One event as a state store keeps it in its outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub kind: EventKind,
    pub upload: Uuid,
    /// 1 for an upload's first event, then one more for each.
    pub seq: u64,
    /// When the transition happened (Unix ms).
    pub at: i64,
    /// The record as it stood after the transition (before, for a removal).
    pub record: UploadRecord,
}

impl StoredEvent {
    /// The event's id: derived from the upload and the sequence number, so
    /// that each redelivery of one event carries the same id (consumers
    /// dedupe on it) however the store keeps it.
    pub fn id(&self) -> Uuid {
        let digest = Sha256::new()
            .chain_update(b"tranche event\0")
            .chain_update(self.upload.as_bytes())
            .chain_update(self.seq.to_be_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        // Shaped as a version 4 UUID: the digest is as good as random.
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// An outbox entry: the event and where the store keeps it (what
/// [`crate::state::StateStore::ack_event`] takes).
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub position: String,
    pub event: StoredEvent,
}

/// An event as sinks send it (the JSON body of a webhook, the `event` field
/// of a stream entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// RFC 3339, milliseconds, UTC.
    pub timestamp: String,
    pub upload_id: Uuid,
    pub seq: u64,
    pub data: EventData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    pub upload: EventUpload,
    /// `upload.completed` and `file.deleted`: the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<EventFile>,
    /// `upload.failed`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Failure>,
}

/// The upload's public fields (those of the upload object, without the
/// chunk lists, which may be long).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventUpload {
    pub id: Uuid,
    pub filename: String,
    pub size: u64,
    pub content_type: String,
    pub status: Status,
    pub bytes_received: u64,
    pub chunk_size: u64,
    pub chunk_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: String,
    pub expires_at: String,
    /// The `sub` of the token that created the upload, when it had one:
    /// whom the application's own records should credit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFile {
    pub id: Uuid,
    pub size: u64,
    pub sha256: String,
    pub filename: String,
    pub content_type: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Event {
    /// Renders a stored event; `file_url` names a file's URL.
    pub fn render(stored: &StoredEvent, file_url: impl Fn(Uuid) -> String) -> Event {
        let r = &stored.record;
        let file = match stored.kind {
            EventKind::Completed | EventKind::FileDeleted => r.file.as_ref().map(|f| EventFile {
                id: f.id,
                size: f.size,
                sha256: f.sha256.clone(),
                filename: r.filename.clone(),
                content_type: r.content_type.clone(),
                metadata: r.metadata.clone(),
                url: file_url(f.id),
                expires_at: f.expires_at.map(crate::upload::rfc3339),
            }),
            _ => None,
        };
        let reason = match stored.kind {
            EventKind::Failed => r.failure.clone(),
            _ => None,
        };
        Event {
            id: stored.id(),
            kind: stored.kind,
            timestamp: rfc3339_ms(stored.at),
            upload_id: stored.upload,
            seq: stored.seq,
            data: EventData {
                upload: EventUpload {
                    id: r.id,
                    filename: r.filename.clone(),
                    size: r.size,
                    content_type: r.content_type.clone(),
                    status: r.status,
                    bytes_received: r.bytes_received,
                    chunk_size: r.chunk_size,
                    chunk_count: r.chunk_count(),
                    sha256: r.expected_sha256.clone(),
                    metadata: r.metadata.clone(),
                    created_at: crate::upload::rfc3339(r.created_at),
                    expires_at: crate::upload::rfc3339(r.expires_at),
                    sub: r
                        .owner
                        .as_deref()
                        .and_then(crate::guards::auth::Access::sub_of_owner)
                        .map(str::to_owned),
                },
                file,
                reason,
            },
        }
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T10:00:00.123Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
        }
        assert_eq!(EventKind::parse("upload.progres"), None);
    }

    #[test]
    fn the_rules_emit_once_per_end() {
        use Status::*;
        assert_eq!(
            EventKind::of_change(Assembling, Completed),
            Some(EventKind::Completed)
        );
        assert_eq!(EventKind::of_change(Uploading, Assembling), None);
        assert_eq!(
            EventKind::of_change(Failed, Aborted),
            Some(EventKind::Aborted)
        );
        assert_eq!(EventKind::of_change(Aborted, Aborted), None);
        assert_eq!(EventKind::of_removal(Uploading), Some(EventKind::Expired));
        assert_eq!(EventKind::of_removal(Aborted), None);
        assert_eq!(
            EventKind::of_removal(Completed),
            Some(EventKind::FileDeleted)
        );
    }

    #[test]
    fn timestamps_carry_milliseconds() {
        assert_eq!(rfc3339_ms(1_795_341_600_123), "2026-11-22T10:00:00.123Z");
    }
}
