//! `[quota]` and `dedup`: what each owner (a token's `sub`, or an API key)
//! may keep, and whether a create may reuse bytes stored already.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// `[quota]`: bytes per owner. 0 is no limit. A token's `max_stored_bytes`
/// and `max_pending_bytes` claims may lower them for its holder, never raise
/// them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// Sizes of an owner's completed files, plus the announced sizes of its
    /// unfinished uploads (which will be stored once they complete).
    pub max_stored_bytes: ByteSize,
    /// Announced sizes of an owner's unfinished uploads.
    pub max_pending_bytes: ByteSize,
}

/// `dedup`: which completed files a create that gives `sha256` and `size`
/// may be answered with, already completed and with no bytes to send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dedup {
    /// The same owner's files only: dedup across owners would tell one
    /// owner that another stores a given file.
    #[default]
    Owner,
    /// Any owner's files.
    Global,
    /// Never.
    Off,
}
