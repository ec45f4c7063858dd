//! The JSON of API v1 that travels between tranche and its clients: what the
//! server answers and the command-line client reads, defined once for both.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Uploading,
    Assembling,
    Completed,
    Failed,
    Aborted,
}

impl Status {
    /// The word the JSON says (`"uploading"`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Uploading => "uploading",
            Status::Assembling => "assembling",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Aborted => "aborted",
        }
    }
}

/// The body of `POST /api/v1/uploads`. Unknown fields are ignored so that newer
/// clients keep working (and named in the answer's `warnings`).
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateRequest {
    pub filename: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub sha256: Option<String>,
    pub chunk_size: Option<u64>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// How long to keep the completed file, in seconds (at most the
    /// server's `retention` and the create token's `max_retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u64>,
    /// Delete the completed file once it has been downloaded in full:
    /// `true`, `1` or `"1"` (`false`, `0`, `"0"`: the server's default).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "flag"
    )]
    pub retention_after_download: Option<bool>,
}

/// A yes/no that HTML forms and shell scripts write as `"1"` as often as
/// JSON's `true`.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b)),
        Some(v) if v == 1 || v == "1" || v == "true" => Ok(Some(true)),
        Some(v) if v == 0 || v == "0" || v == "false" => Ok(Some(false)),
        Some(v) => Err(D::Error::custom(format!(
            "expected true, false, \"1\" or \"0\", not {v}"
        ))),
    }
}

/// The answer to a stored chunk.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkAnswer {
    pub index: u64,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub received_chunks: u64,
    pub chunk_count: u64,
    pub bytes_received: u64,
}

/// Why an upload failed, kept so that `GET` and a repeated `complete` can say so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
    pub message: String,
    /// For `digest_mismatch`: the SHA-256 the received bytes have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The completed file, as listed in the upload object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    pub id: Uuid,
    pub size: u64,
    pub sha256: String,
    /// Where to download it: absolute when the server knows its public
    /// origin, else a path.
    pub url: String,
    /// When the file is deleted (its retention ends); absent: kept until
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The upload object of API v1 (create answer, `GET`, `complete`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadView {
    pub id: Uuid,
    pub filename: String,
    pub size: u64,
    pub content_type: String,
    pub chunk_size: u64,
    pub chunk_count: u64,
    pub status: Status,
    pub received_chunks: u64,
    pub bytes_received: u64,
    pub missing_chunks: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// How long the completed file is kept, in seconds; absent: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u64>,
    pub created_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// In a create answer, when tokens are configured: the token for this
    /// upload's chunks, status, complete, abort and download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_token: Option<String>,
    /// In a create answer: the request's fields this server did not know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The completed file is deleted once downloaded in full.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retention_after_download: bool,
    /// A worker's last report on the completed file, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<Processing>,
}

/// Where a worker's processing of a completed file stands, as the worker
/// last reported it (`PUT /api/v1/uploads/{id}/processing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingState {
    Queued,
    Processing,
    Completed,
    Failed,
}

/// The body of `PUT /api/v1/uploads/{id}/processing`: a worker's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessingReport {
    pub state: ProcessingState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// A worker's last report on a completed file, shown in the upload object
/// and streamed over SSE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Processing {
    pub state: ProcessingState,
    /// From 0 to 1, if the worker can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whatever the worker wants the client to have (a thumbnail's URL...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// RFC 3339 with milliseconds, UTC.
    pub updated_at: String,
    /// 1 for the first report, one more for each: orders the reports
    /// (the SSE stream's ids build on it).
    pub revision: u64,
}

/// What a scrub found: `POST /api/v1/admin/scrub`'s answer, and what
/// `tranche scrub` prints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubReport {
    /// Completed files re-hashed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files whose bytes no longer have their recorded SHA-256.
    pub mismatches: Vec<ScrubMismatch>,
    /// Files in the byte store that no record names.
    pub orphans: Vec<Uuid>,
    /// Completed files whose record is there but whose bytes are not.
    #[serde(default)]
    pub missing: Vec<Uuid>,
}

/// What one owner stores and has pending, in bytes, with its limits (absent:
/// none): `GET /api/v1/usage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerUsage {
    pub owner: String,
    pub stored_bytes: u64,
    pub pending_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_bytes: Option<u64>,
}

/// `GET /api/v1/usage`'s answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageReport {
    pub owners: Vec<OwnerUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubMismatch {
    pub id: Uuid,
    /// The SHA-256 recorded at completion.
    pub expected: String,
    /// What the bytes hash to now.
    pub actual: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_word_is_the_one_its_json_says() {
        use Status::*;
        for status in [Uploading, Assembling, Completed, Failed, Aborted] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
