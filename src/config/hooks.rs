//! `[hooks]`: blocking calls to the application at two points of an
//! upload's life, whose answer decides whether it goes on: `pre_create`
//! (before anything is stored) and `pre_finish` (after the SHA-256 is
//! verified, before the upload counts as completed).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_create: Option<HookEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_finish: Option<HookEndpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookEndpoint {
    /// Where the hook is POSTed (http or https; redirects are not followed).
    pub url: String,
    /// How long the application may take to answer.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// What a hook that does not answer usably means.
    #[serde(default)]
    pub on_error: OnError,
    /// `whsec_` and the base64 of a key: requests are then signed as
    /// Standard Webhooks (as events are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The policy for a hook that fails (times out, cannot be reached, answers
/// 5xx or a body it cannot read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail closed: the request gets `503 hook_unavailable`, nothing is lost.
    #[default]
    Deny,
    /// Fail open: go on as if the hook had allowed (a warning in the log).
    Allow,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl HookSettings {
    /// Each configured hook with its name.
    pub fn endpoints(&self) -> impl Iterator<Item = (&'static str, &HookEndpoint)> {
        [
            ("pre_create", self.pre_create.as_ref()),
            ("pre_finish", self.pre_finish.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, hook)| hook.map(|h| (name, h)))
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        for (name, hook) in self.endpoints() {
            let url = reqwest::Url::parse(&hook.url)
                .map_err(|e| format!("{name}.url {:?} is not a URL: {e}", hook.url))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "{name}.url {:?} must be an http:// or https:// URL",
                    hook.url
                ));
            }
            if hook.timeout < Duration::from_millis(10) || hook.timeout > Duration::from_secs(60) {
                return Err(format!(
                    "{name}.timeout must be between 10ms and 60s (a request waits for it)"
                ));
            }
            if let Some(secret) = &hook.secret {
                crate::events::sinks::webhook::secret_key(secret)
                    .map_err(|e| format!("{name}.secret: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CliOverrides, Settings};

    #[test]
    // The closure's error type is figment's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    fn hooks_from_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                r#"
                [hooks.pre_create]
                url = "http://127.0.0.1:9000/hooks/pre-create"
                secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
                "#,
            )?;
            jail.set_env("TRANCHE_HOOKS__PRE_CREATE__ON_ERROR", "allow");
            jail.set_env(
                "TRANCHE_HOOKS__PRE_FINISH__URL",
                "https://app.example.com/pre-finish",
            );
            jail.set_env("TRANCHE_HOOKS__PRE_FINISH__TIMEOUT", "2s");
            let s = Settings::load(None, &CliOverrides::default()).unwrap();
            let create = s.hooks.pre_create.as_ref().unwrap();
            assert_eq!(create.timeout, Duration::from_secs(5));
            assert_eq!(create.on_error, OnError::Allow);
            let finish = s.hooks.pre_finish.as_ref().unwrap();
            assert_eq!(finish.url, "https://app.example.com/pre-finish");
            assert_eq!(finish.timeout, Duration::from_secs(2));
            assert_eq!(finish.on_error, OnError::Deny, "fail closed by default");
            assert_eq!(finish.secret, None);
            jail.set_env("TRANCHE_HOOKS__PRE_FINISH__ON_ERROR", "maybe");
            assert!(Settings::load(None, &CliOverrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn bad_hooks_are_named() {
        let with = |url: &str, timeout_ms: u64, secret: Option<&str>| Settings {
            hooks: HookSettings {
                pre_create: None,
                pre_finish: Some(HookEndpoint {
                    url: url.into(),
                    timeout: Duration::from_millis(timeout_ms),
                    on_error: OnError::Deny,
                    secret: secret.map(str::to_owned),
                }),
            },
            ..Settings::default()
        };
        with("http://127.0.0.1:9000/hook", 5000, None)
            .validate()
            .unwrap();
        let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        with("https://app.example.com/hook", 5000, Some(good))
            .validate()
            .unwrap();
        for (url, timeout_ms, secret, why) in [
            (
                "ftp://app.example.com/hook",
                5000,
                None,
                "http:// or https://",
            ),
            ("app.example.com/hook", 5000, None, "not a URL"),
            ("http://127.0.0.1:9000/hook", 0, None, "timeout"),
            ("http://127.0.0.1:9000/hook", 61_000, None, "timeout"),
            ("http://127.0.0.1:9000/hook", 5000, Some("secret"), "whsec_"),
            (
                "http://127.0.0.1:9000/hook",
                5000,
                Some("whsec_c2hvcnQ="),
                "24 to 64",
            ),
        ] {
            let err = with(url, timeout_ms, secret)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains("`hooks`"), "{url}: {err}");
            assert!(err.contains("pre_finish"), "{url}: {err}");
            assert!(err.contains(why), "{url} {timeout_ms} {secret:?}: {err}");
        }
    }
}
