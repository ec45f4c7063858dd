//! `[cors]`: which other origins' pages may call the API from a browser.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// CORS: which other origins' pages may call the API from a browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins such as `https://app.example.com`; `["*"]` for any origin;
    /// empty: no CORS headers at all, so browsers allow same-origin pages only.
    pub allowed_origins: Vec<String>,
    /// Request headers a cross-origin page may send.
    pub allowed_headers: Vec<String>,
    /// Response headers a cross-origin page may read.
    pub exposed_headers: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsSettings {
    fn default() -> Self {
        let owned = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        CorsSettings {
            allowed_origins: Vec::new(),
            allowed_headers: owned(&[
                "Authorization",
                "Content-Type",
                "Content-Digest",
                "Idempotency-Key",
                "Range",
                "If-Range",
                "If-Match",
                "If-None-Match",
            ]),
            exposed_headers: owned(&[
                "Location",
                "Retry-After",
                "ETag",
                "Content-Disposition",
                "Content-Range",
                "Accept-Ranges",
                "Repr-Digest",
                "Digest",
            ]),
            max_age: Duration::from_secs(3600),
        }
    }
}

impl CorsSettings {
    /// A browser sends `Origin` as `scheme://host[:port]` and CORS compares it
    /// as a string, so an entry with a path or a trailing slash would never
    /// match: refuse it at start rather than fail silently in the browser.
    pub(super) fn validate_origins(&self) -> Result<(), String> {
        let wildcard = self.allowed_origins.iter().any(|o| o == "*");
        if wildcard && self.allowed_origins.len() > 1 {
            return Err("\"*\" allows every origin and must be the only entry".into());
        }
        for origin in self.allowed_origins.iter().filter(|o| *o != "*") {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => {}
                _ => {
                    return Err(format!(
                        "has {origin:?}; write origins as scheme://host[:port] (no path, no trailing slash)"
                    ))
                }
            }
        }
        Ok(())
    }
}
