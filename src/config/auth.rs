//! `[auth]`: who may use the API, and how secrets stay out of printed settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[auth]`: who may use the API. Off by default for a local quick start;
/// `tranche serve` refuses a non-loopback address with it off unless told
/// `allow_anonymous` (or `--insecure`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub enabled: bool,
    /// Full-access keys for the application's backend: the key itself or
    /// `sha256:<hex>` of it. Only hashes are kept in memory.
    #[serde(serialize_with = "redact_list")]
    pub api_keys: Vec<String>,
    /// A file with one key (or `sha256:<hex>`) per line; `#` starts a comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<PathBuf>,
    /// HS256 secret that signs and checks upload tokens (at least 32 bytes).
    #[serde(
        serialize_with = "redact_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub jwt_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Lifetime of the `upload_token` in a create answer; unset means `upload_ttl`.
    #[serde(
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub upload_token_ttl: Option<Duration>,
    /// Tolerated clock difference when checking a token's `exp`.
    #[serde(with = "humantime_serde")]
    pub clock_leeway: Duration,
    /// Serve without authentication on a non-loopback address (say, behind a
    /// proxy that authenticates).
    pub allow_anonymous: bool,
    /// Completed files may be downloaded without credentials.
    pub public_downloads: bool,
    /// `/metrics` is open; otherwise it needs an API key while auth is on.
    pub public_metrics: bool,
    /// An upload's own token may delete its completed file; otherwise
    /// deleting a file needs an API key.
    pub owner_may_delete: bool,
}

impl AuthSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_string(),
            })
        };
        if self.jwt_secret.is_some() && self.jwt_secret_file.is_some() {
            return invalid(
                "auth.jwt_secret",
                "and auth.jwt_secret_file are both set; keep one",
            );
        }
        if self.enabled && self.jwt_secret.is_none() && self.jwt_secret_file.is_none() {
            return invalid(
                "auth.jwt_secret",
                "is needed when auth is enabled (it signs upload tokens); \
                 generate one with `openssl rand -hex 32`",
            );
        }
        if self.clock_leeway > Duration::from_secs(300) {
            return invalid("auth.clock_leeway", "must be at most 5m");
        }
        Ok(())
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            enabled: false,
            api_keys: Vec::new(),
            api_keys_file: None,
            jwt_secret: None,
            jwt_secret_file: None,
            upload_token_ttl: None,
            clock_leeway: Duration::from_secs(30),
            allow_anonymous: false,
            public_downloads: false,
            public_metrics: false,
            owner_may_delete: false,
        }
    }
}

fn redact_list<S: serde::Serializer>(list: &[String], ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(list.iter().map(|_| "<redacted>"))
}

fn redact_option<S: serde::Serializer>(value: &Option<String>, ser: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => ser.serialize_str("<redacted>"),
        None => ser.serialize_none(),
    }
}
