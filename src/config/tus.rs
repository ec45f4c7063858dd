//! `[tus]`: the tus 1.0 front end, for Uppy, tus-js-client, tuspy and the
//! mobile SDKs.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TusSettings {
    /// Serve tus 1.0 at `path`.
    pub enabled: bool,
    /// Where tus clients create uploads (`endpoint` in their settings);
    /// each upload lives at this path followed by its id.
    pub path: String,
}

impl Default for TusSettings {
    fn default() -> Self {
        TusSettings {
            enabled: true,
            path: "/files/".into(),
        }
    }
}

impl TusSettings {
    /// The path without its trailing slash, as a route scope: `/files`.
    pub fn scope(&self) -> &str {
        self.path.trim_end_matches('/')
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        let scope = self.scope();
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        };
        if !self.path.starts_with('/') || scope.is_empty() || !scope[1..].split('/').all(segment_ok)
        {
            return Err(
                "must be a path such as /files/ (letters, digits, - . _ ~ between slashes)".into(),
            );
        }
        let taken = ["/api", "/healthz", "/readyz", "/metrics"];
        if taken
            .iter()
            .any(|t| scope == *t || scope.starts_with(&format!("{t}/")))
        {
            return Err(format!("{scope} is taken by the server's own routes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        let with = |path: &str| TusSettings {
            enabled: true,
            path: path.into(),
        };
        assert!(with("/files/").validate().is_ok());
        assert!(with("/uploads/tus").validate().is_ok());
        assert_eq!(with("/uploads/tus/").scope(), "/uploads/tus");
        for bad in ["files/", "/", "/a//b/", "/api/v1/tus/", "/metrics", "/a b/"] {
            assert!(with(bad).validate().is_err(), "{bad} should be refused");
        }
    }
}
