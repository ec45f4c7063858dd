//! Settings: built-in defaults, then `config.toml`, then `TRANCHE_*` environment
//! variables, then command-line flags. Every key is documented in the repository's
//! `config.toml`; this module is the single place that knows their defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod auth;
mod cors;
mod events;
mod hooks;
mod limits;
mod proxies;
mod quota;
mod tus;

pub use auth::AuthSettings;
pub use cors::CorsSettings;
pub use events::{EventSettings, StreamSettings, WebhookSettings};
pub use hooks::{HookEndpoint, HookSettings, OnError};
pub use limits::{LimitSettings, RateLimitSettings, SniffContent};
pub use proxies::TrustedProxies;
pub use quota::{Dedup, QuotaSettings};
pub use tus::TusSettings;

/// Upper bound on chunks per upload. It keeps the received-chunk bitmap small
/// (1.25 KiB) so that recording a chunk stays cheap in every store; a wish that
/// would need more chunks is raised to `ceil(size / MAX_CHUNKS)`.
pub const MAX_CHUNKS: u64 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds.
    pub bind: String,
    /// Where chunks, completed files and the embedded state live.
    pub data_dir: PathBuf,
    /// Base URL used in `file.url` (e.g. `https://uploads.example.com`); when
    /// unset, URLs are relative (`/api/v1/files/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For`, `-Proto`,
    /// `-Host` and `-Port` headers are believed, for logs and absolute URLs.
    /// Empty: such headers are ignored from everyone.
    #[serde(default)]
    pub trusted_proxies: TrustedProxies,
    /// `full`: a chunk is acknowledged only once its bytes and its record are on
    /// disk (fdatasync). `relaxed`: the OS flushes when it likes; a power cut may
    /// lose acknowledged chunks (a process crash does not).
    pub durability: Durability,
    /// Chunk size used when the client does not wish for one.
    pub chunk_size: ByteSize,
    pub min_chunk_size: ByteSize,
    pub max_chunk_size: ByteSize,
    /// Largest file an upload may announce (413 `file_too_large` at create).
    pub max_file_size: ByteSize,
    /// An unfinished upload expires this long after its last chunk.
    #[serde(with = "humantime_serde")]
    pub upload_ttl: Duration,
    /// How long a completed file is kept; `None` (the default): forever. A
    /// create may ask for less (`retention`), a create token cap it.
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retention: Option<Duration>,
    /// How often the janitor sweeps expired uploads and orphaned files.
    #[serde(with = "humantime_serde")]
    pub janitor_interval: Duration,
    /// How often the janitor scrubs every completed file in the background
    /// (re-hashes it against its SHA-256); `None` (the default): never.
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scrub_interval: Option<Duration>,
    /// Bytes per second a scrub reads at most; 0: as fast as the disk goes.
    pub scrub_bandwidth: ByteSize,
    /// A chunk file that no upload refers to is removed once it is this old
    /// (a younger one may belong to a create still in progress).
    #[serde(with = "humantime_serde")]
    pub orphan_grace: Duration,
    /// How long `complete` waits for assembly before answering 202.
    #[serde(with = "humantime_serde")]
    pub complete_wait: Duration,
    /// `when_asked`: a chunk's own SHA-256 is computed only when the request
    /// carries `Content-Digest`. `always`: every chunk answer carries `sha256`.
    pub chunk_digest: ChunkDigest,
    /// On SIGTERM/ctrl-c, in-flight requests get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Serve the browser uploader from `static/` at `/`.
    pub serve_static: bool,
    pub static_dir: PathBuf,
    /// Cross-origin access for pages on other origins (an embedded uploader).
    pub cors: CorsSettings,
    pub store: StoreSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub rate_limit: RateLimitSettings,
    /// The tus 1.0 front end.
    pub tus: TusSettings,
    /// Whether a create that gives `sha256` and `size` of a stored file is
    /// answered with that file, already completed: `owner` (the default),
    /// `global` or `off`.
    #[serde(default)]
    pub dedup: Dedup,
    /// Bytes each owner may keep and have pending.
    #[serde(default)]
    pub quota: QuotaSettings,
    /// Every completed file is deleted once downloaded in full (a create may
    /// ask for it with `retention_after_download` when this is off).
    #[serde(default)]
    pub retention_after_download: bool,
    /// Events of uploads, and their sinks.
    #[serde(default)]
    pub events: EventSettings,
    /// Blocking calls to the application: `pre_create`, `pre_finish`.
    #[serde(default)]
    pub hooks: HookSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    Full,
    Relaxed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkDigest {
    WhenAsked,
    Always,
}

/// The state backend, a tagged choice: `[store] type = "embedded" | "redis"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreSettings {
    /// redb file inside the data directory (or at `path`).
    Embedded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
    },
    Redis {
        url: String,
        #[serde(default = "default_key_prefix")]
        key_prefix: String,
    },
}

fn default_key_prefix() -> String {
    "tranche:".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            public_url: None,
            trusted_proxies: TrustedProxies::default(),
            durability: Durability::Full,
            chunk_size: ByteSize::mib(8),
            min_chunk_size: ByteSize::kib(256),
            max_chunk_size: ByteSize::mib(64),
            max_file_size: ByteSize::gib(64),
            upload_ttl: Duration::from_secs(24 * 3600),
            retention: None,
            janitor_interval: Duration::from_secs(600),
            orphan_grace: Duration::from_secs(3600),
            scrub_interval: None,
            scrub_bandwidth: ByteSize::mib(32),
            complete_wait: Duration::from_secs(20),
            chunk_digest: ChunkDigest::WhenAsked,
            shutdown_timeout: Duration::from_secs(30),
            workers: 0,
            serve_static: true,
            static_dir: PathBuf::from("./static"),
            cors: CorsSettings::default(),
            store: StoreSettings::Embedded { path: None },
            log: LogSettings {
                format: LogFormat::Text,
                level: "info".into(),
            },
            auth: AuthSettings::default(),
            limits: LimitSettings::default(),
            rate_limit: RateLimitSettings::default(),
            tus: TusSettings::default(),
            dedup: Dedup::default(),
            quota: QuotaSettings::default(),
            retention_after_download: false,
            events: EventSettings::default(),
            hooks: HookSettings::default(),
        }
    }
}

/// Values given on the command line; they override every other layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// `TRANCHE_*` variables that belong to the client commands (`upload`,
/// `status`, `download`), not to the server: a shell that exports them for
/// the client must still be able to start a server.
const CLIENT_ENV: &[&str] = &["server", "token", "state_dir"];

impl Settings {
    /// Loads the layers in order. `config_path` given explicitly must exist; without
    /// it, `./config.toml` is read when present.
    pub fn load(config_path: Option<&Path>, cli: &CliOverrides) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match config_path {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file(path)),
            None => figment = figment.merge(Toml::file("config.toml")),
        }
        let settings: Settings = figment
            // `TRANCHE_STORE__URL` sets `store.url`; a single `_` stays part of the key.
            .merge(Env::prefixed("TRANCHE_").ignore(CLIENT_ENV).split("__"))
            .merge(Serialized::defaults(cli))
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: relations between keys and parseable addresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_string(),
            })
        };
        if self.bind.parse::<SocketAddr>().is_err() {
            return invalid("bind", "must be an address such as 127.0.0.1:8080");
        }
        if self.min_chunk_size.0 == 0 {
            return invalid("min_chunk_size", "must be at least 1 byte");
        }
        if self.min_chunk_size > self.max_chunk_size {
            return invalid("min_chunk_size", "must not exceed max_chunk_size");
        }
        if self.chunk_size < self.min_chunk_size || self.chunk_size > self.max_chunk_size {
            return invalid(
                "chunk_size",
                "must lie between min_chunk_size and max_chunk_size",
            );
        }
        if let Err(problem) = self.tus.validate() {
            return invalid("tus.path", &problem);
        }
        if let Err(problem) = self.events.validate() {
            return invalid("events", &problem);
        }
        if let Err(problem) = self.hooks.validate() {
            return invalid("hooks", &problem);
        }
        if self.upload_ttl.is_zero() {
            return invalid("upload_ttl", "must be longer than zero");
        }
        if self.retention.is_some_and(|r| r < Duration::from_secs(1)) {
            return invalid(
                "retention",
                "must be at least 1s (leave it unset to keep files)",
            );
        }
        if self
            .scrub_interval
            .is_some_and(|i| i < Duration::from_secs(60))
        {
            return invalid(
                "scrub_interval",
                "must be at least 1m (leave it unset for none)",
            );
        }
        if self.janitor_interval.is_zero() {
            return invalid("janitor_interval", "must be longer than zero");
        }
        if self.orphan_grace < Duration::from_secs(10) {
            // A create writes the part file just before it records the upload;
            // a shorter grace could sweep a brand-new upload's file.
            return invalid("orphan_grace", "must be at least 10s");
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid("public_url", "must start with http:// or https://");
            }
        }
        self.auth.validate()?;
        let l = &self.limits;
        if l.max_chunk_requests == 0 || l.max_chunk_requests_per_upload == 0 {
            return invalid("limits.max_chunk_requests", "must be at least 1");
        }
        if l.body_idle_timeout.is_zero() || l.header_timeout.is_zero() {
            return invalid("limits.body_idle_timeout", "must be longer than zero");
        }
        if l.max_json_bytes.0 < 1024 {
            return invalid("limits.max_json_bytes", "must be at least 1 KiB");
        }
        for pattern in &l.allowed_content_types {
            if !crate::guards::limits::content::is_valid_pattern(pattern) {
                return invalid(
                    "limits.allowed_content_types",
                    &format!("has {pattern:?}; use type/subtype or type/*"),
                );
            }
        }
        let r = &self.rate_limit;
        if r.enabled
            && !(r.create_per_second > 0.0
                && r.chunk_per_second > 0.0
                && r.create_burst > 0
                && r.chunk_burst > 0)
        {
            return invalid(
                "rate_limit",
                "rates and bursts must be above zero (or set enabled = false)",
            );
        }
        if let Err(problem) = self.cors.validate_origins() {
            return invalid("cors.allowed_origins", &problem);
        }
        if let StoreSettings::Redis { url, .. } = &self.store {
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://"))
            {
                return invalid("store.url", "must be a redis:// or rediss:// URL");
            }
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return invalid(
                "log.level",
                "is not a valid filter (try \"info\" or \"tranche=debug\")",
            );
        }
        Ok(())
    }

    /// The chunk size the server uses for a file of `size` bytes given the
    /// client's wish: clamped to the configured bounds, then raised if the file
    /// would otherwise need more than [`MAX_CHUNKS`] chunks.
    pub fn chunk_size_for(&self, size: u64, wish: Option<u64>) -> u64 {
        let wish = wish.unwrap_or(self.chunk_size.0);
        let clamped = wish.clamp(self.min_chunk_size.0, self.max_chunk_size.0);
        clamped.max(size.div_ceil(MAX_CHUNKS))
    }

    pub fn embedded_store_path(&self) -> PathBuf {
        match &self.store {
            StoreSettings::Embedded { path: Some(p) } => p.clone(),
            _ => self.data_dir.join("state.redb"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn chunk_size_is_clamped_and_raised_for_huge_files() {
        let s = Settings::default();
        assert_eq!(s.chunk_size_for(100, None), 8 << 20);
        assert_eq!(s.chunk_size_for(100, Some(1)), 256 << 10);
        assert_eq!(s.chunk_size_for(100, Some(1 << 40)), 64 << 20);
        let huge = 1u64 << 40;
        assert!(huge.div_ceil(s.chunk_size_for(huge, None)) <= MAX_CHUNKS);
    }

    #[test]
    fn a_bad_key_is_named() {
        let s = Settings {
            bind: "nope".into(),
            ..Settings::default()
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("`bind`"), "{err}");
    }

    #[test]
    // The closure's error type is figment's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    fn trusted_proxies_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRANCHE_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1");
            let s = Settings::load(None, &CliOverrides::default()).unwrap();
            assert!(s.trusted_proxies.contains("10.9.8.7".parse().unwrap()));
            assert!(s.trusted_proxies.contains("127.0.0.1".parse().unwrap()));
            assert!(!s.trusted_proxies.contains("127.0.0.2".parse().unwrap()));
            jail.set_env("TRANCHE_TRUSTED_PROXIES", "[10.0.0.1, \"::1\"]");
            let s = Settings::load(None, &CliOverrides::default()).unwrap();
            assert!(s.trusted_proxies.contains("::1".parse().unwrap()));
            jail.set_env("TRANCHE_TRUSTED_PROXIES", "10.0.0.0/40");
            let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
            assert!(err.to_string().contains("10.0.0.0/40"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn dedup_and_quotas_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None, &CliOverrides::default()).unwrap();
            assert_eq!(s.dedup, Dedup::Owner);
            assert_eq!(s.quota.max_stored_bytes.0, 0);
            jail.set_env("TRANCHE_DEDUP", "global");
            jail.set_env("TRANCHE_QUOTA__MAX_STORED_BYTES", "10 GiB");
            jail.set_env("TRANCHE_RETENTION_AFTER_DOWNLOAD", "true");
            let s = Settings::load(None, &CliOverrides::default()).unwrap();
            assert_eq!(s.dedup, Dedup::Global);
            assert_eq!(s.quota.max_stored_bytes, ByteSize::gib(10));
            assert!(s.retention_after_download);
            jail.set_env("TRANCHE_DEDUP", "sometimes");
            assert!(Settings::load(None, &CliOverrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn the_clients_variables_do_not_stop_the_server() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRANCHE_SERVER", "http://127.0.0.1:8080");
            jail.set_env("TRANCHE_TOKEN", "secret");
            jail.set_env("TRANCHE_STATE_DIR", "/tmp/state");
            jail.set_env("TRANCHE_DATA_DIR", "/srv/tranche");
            let s = Settings::load(None, &CliOverrides::default()).unwrap();
            assert_eq!(s.data_dir, PathBuf::from("/srv/tranche"));
            // Anything else unknown is still a mistake worth stopping for.
            jail.set_env("TRANCHE_DATADIR", "/srv/tranche");
            let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
            assert!(err.to_string().contains("datadir"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn cors_origins_must_be_bare_origins() {
        let with = |origins: &[&str]| Settings {
            cors: CorsSettings {
                allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
                ..CorsSettings::default()
            },
            ..Settings::default()
        };
        with(&["https://app.example.com", "http://127.0.0.1:3000"])
            .validate()
            .unwrap();
        with(&["*"]).validate().unwrap();
        for bad in [
            &["https://app.example.com/"][..],
            &["app.example.com"],
            &["*", "https://app.example.com"],
        ] {
            let err = with(bad).validate().unwrap_err().to_string();
            assert!(err.contains("`cors.allowed_origins`"), "{bad:?}: {err}");
        }
    }
}
