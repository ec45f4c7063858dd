//! `[limits]` and `[rate_limit]`: what a single client may ask of the server.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// `[limits]`: what a single client may ask of the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Content types an upload may declare (`video/*`, `image/png`); empty
    /// allows any. A missing type counts as `application/octet-stream`.
    pub allowed_content_types: Vec<String>,
    /// Whether the first chunk's leading bytes must match the declared type
    /// (for types whose signature the server knows). `auto`: only when
    /// `allowed_content_types` restricts types.
    pub sniff_content: SniffContent,
    /// Free space on the data directory that uploads may never take.
    pub reserve_free_bytes: ByteSize,
    /// Upper bound on bytes of unfinished uploads in the data directory
    /// (0: only the disk's free space counts).
    pub max_pending_bytes: ByteSize,
    /// With the embedded store: a ballast file this large, given up to the
    /// state store when the disk fills, so that admitted uploads can still
    /// record their chunks (0: none).
    pub state_reserve: ByteSize,
    /// Largest JSON body on control endpoints.
    pub max_json_bytes: ByteSize,
    /// A chunk body that sends nothing for this long is dropped (slowloris).
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// A client must send its request head within this time.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Chunk requests in progress at once, over all uploads of this instance.
    pub max_chunk_requests: usize,
    /// Chunk requests in progress at once for one upload.
    pub max_chunk_requests_per_upload: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            allowed_content_types: Vec::new(),
            sniff_content: SniffContent::Auto,
            reserve_free_bytes: ByteSize::mib(256),
            max_pending_bytes: ByteSize::b(0),
            state_reserve: ByteSize::mib(64),
            max_json_bytes: ByteSize::kib(64),
            body_idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_chunk_requests: 512,
            max_chunk_requests_per_upload: 32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SniffContent {
    Auto,
    Always,
    Never,
}

impl LimitSettings {
    /// Are chunk 0's leading bytes checked against the declared type?
    pub fn sniffs(&self) -> bool {
        match self.sniff_content {
            SniffContent::Auto => !self.allowed_content_types.is_empty(),
            SniffContent::Always => true,
            SniffContent::Never => false,
        }
    }
}

/// `[rate_limit]`: token buckets per caller (API key, token subject, or client
/// address). With the Redis store the buckets live in Redis, shared by every
/// instance; with the embedded store, in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Creates per second a caller may sustain, and the burst above it.
    pub create_per_second: f64,
    pub create_burst: u32,
    /// Chunk requests per second a caller may sustain, and the burst above it.
    pub chunk_per_second: f64,
    pub chunk_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        // Generous: they stop floods, not busy but honest clients.
        RateLimitSettings {
            enabled: true,
            create_per_second: 100.0,
            create_burst: 1000,
            chunk_per_second: 5000.0,
            chunk_burst: 10000,
        }
    }
}
