//! Building and running the application: bind a listener (port 0 in tests),
//! open the store and the data directory, start the HTTP server and the
//! janitor, and stop both cleanly: the first SIGTERM or ctrl-c (SIGINT) stops
//! accepting and lets requests in flight finish within `shutdown_timeout`; a
//! second one stops at once, cutting what is still running.

use std::net::TcpListener;
use std::sync::Arc;

use actix_cors::{Cors, CorsError};
use actix_web::dev::{Server, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Condition, DefaultHeaders, ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpResponse};
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

use crate::blobs::LocalDisk;
use crate::clock::Clock;
use crate::config::{CorsSettings, Durability, Settings, StoreSettings};
use crate::context::AppContext;
use crate::guards::auth::Authenticator;
use crate::guards::limits::disk::DiskGuard;
use crate::guards::limits::inflight::ChunkSlots;
use crate::guards::limits::reserve::StateReserve;
use crate::guards::rate::RateLimiter;
use crate::hooks::Hooks;
use crate::http::framing::FramingServer;
use crate::metrics::Metrics;
use crate::state::{EmbeddedStore, RedisStore, Store};
use crate::telemetry::AccessLog;
use crate::{http, janitor};

const TUS_REQUEST_HEADERS: [&str; 9] = [
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Checksum",
    "X-HTTP-Method-Override",
    "X-Requested-With",
];
const TUS_RESPONSE_HEADERS: [&str; 11] = [
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Expires",
];

/// The CORS policy of `settings`; only used when it names some origin.
fn cors(settings: &CorsSettings, tus: bool) -> Cors {
    // tus clients in a browser send and read these whatever `[cors]` lists.
    let (tus_sent, tus_read): (&[&str], &[&str]) = if tus {
        (&TUS_REQUEST_HEADERS, &TUS_RESPONSE_HEADERS)
    } else {
        (&[], &[])
    };
    let mut cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers(
            settings
                .allowed_headers
                .iter()
                .map(String::as_str)
                .chain(tus_sent.iter().copied()),
        )
        .expose_headers(
            settings
                .exposed_headers
                .iter()
                .map(String::as_str)
                .chain(tus_read.iter().copied()),
        )
        .max_age(settings.max_age.as_secs() as usize)
        // A request from another origin still gets its answer (curl and
        // servers send `Origin` too); only the CORS headers are left out, and
        // the browser then keeps the answer from the page.
        .block_on_origin_mismatch(false);
    for origin in &settings.allowed_origins {
        cors = if origin == "*" {
            cors.allow_any_origin().send_wildcard()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

/// actix-cors answers a refused preflight with a plain-text 400; every error
/// of tranche is JSON.
fn cors_error_as_json<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let Some(message) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<CorsError>())
        .map(ToString::to_string)
    else {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    };
    let (req, res) = res.into_parts();
    let mut json = HttpResponse::build(res.status()).json(serde_json::json!({
        "error": "cors_rejected",
        "message": format!("{message}; see [cors] in the server's configuration"),
    }));
    json.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Method"),
    );
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, json).map_into_right_body(),
    ))
}

pub struct Application {
    port: u16,
    server: Server,
    ctx: AppContext,
}

impl Application {
    /// Opens everything and binds `settings.bind`; the server does not accept
    /// requests until [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// [`Application::build`] on another clock: tests pass an adjustable one
    /// and move it forward (see [`AppContext::clock`]).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Application> {
        let auth = preflight(&settings)?;
        let sync = settings.durability == Durability::Full;
        let storage = LocalDisk::open(&settings.data_dir, sync).with_context(|| {
            format!("cannot use data directory {}", settings.data_dir.display())
        })?;
        // Room kept for the embedded store's commits when the disk fills.
        let state_reserve = match (&settings.store, settings.limits.state_reserve.0) {
            (StoreSettings::Embedded { .. }, size) if size > 0 => {
                Some(Arc::new(StateReserve::open(
                    &settings.data_dir,
                    size,
                    settings.limits.reserve_free_bytes.0,
                )))
            }
            _ => None,
        };
        let store = match &settings.store {
            StoreSettings::Embedded { .. } => Store::Embedded(
                EmbeddedStore::open_with_reserve(
                    &settings.embedded_store_path(),
                    settings.durability,
                    clock.clone(),
                    state_reserve.clone(),
                )
                .context("cannot open the embedded state store")?,
            ),
            StoreSettings::Redis { url, key_prefix } => {
                Store::Redis(connect_redis(url, key_prefix).await?)
            }
        };
        let store = events_outbox(store, &settings).await?;
        if !auth.enabled() {
            tracing::warn!(
                bind = %settings.bind,
                "AUTHENTICATION IS OFF: anyone who can reach this address may upload, read and delete; \
                 set [auth] enabled = true before exposing tranche"
            );
        }
        let rate_limiter = RateLimiter::new(&settings.rate_limit, &store);
        let limits = &settings.limits;
        let disk_guard = Arc::new(DiskGuard::new(
            limits.reserve_free_bytes.0,
            limits.max_pending_bytes.0,
            state_reserve,
        ));
        let chunk_slots = ChunkSlots::new(
            limits.max_chunk_requests,
            limits.max_chunk_requests_per_upload,
        );
        let header_timeout = limits.header_timeout;
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot bind {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let metrics = Metrics::new();
        let hooks = Hooks::new(&settings.hooks, metrics.hook_calls.clone())
            .map_err(|e| anyhow::anyhow!("[hooks]: {e}"))?;
        let ctx = AppContext {
            settings: Arc::new(settings),
            clock,
            store,
            storage,
            metrics,
            auth: Arc::new(auth),
            rate_limiter,
            disk_guard,
            chunk_slots,
            catching_up: Arc::default(),
            scrubbing: Arc::default(),
            hooks: Arc::new(hooks),
            watchers: crate::core::Watchers::default(),
            stopping: CancellationToken::new(),
        };
        let data = web::Data::new(ctx.clone());
        let static_dir = ctx.settings.static_dir.clone();
        let serve_static = ctx.settings.serve_static && static_dir.is_dir();
        if ctx.settings.serve_static && !serve_static {
            // Relative to the working directory: a service started elsewhere
            // would lose the page without a word otherwise.
            tracing::warn!(
                static_dir = %static_dir.display(),
                "static_dir is not a directory: the browser uploader at / is off \
                 (set static_dir to the static/ folder, or serve_static = false)"
            );
        }
        let workers = match ctx.settings.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let cors_settings = ctx.settings.cors.clone();
        let tus_scope = ctx
            .settings
            .tus
            .enabled
            .then(|| ctx.settings.tus.scope().to_owned());
        let server = FramingServer::new(move || {
            let app = App::new()
                .wrap(Condition::new(
                    !cors_settings.allowed_origins.is_empty(),
                    cors(&cors_settings, tus_scope.is_some()),
                ))
                .wrap(ErrorHandlers::new().default_handler(cors_error_as_json))
                .wrap(TracingLogger::<AccessLog>::new())
                .app_data(data.clone())
                .configure(|cfg| http::configure(cfg, tus_scope.as_deref()));
            if serve_static {
                app.service(
                    web::scope("")
                        // The files keep their names from one release to the
                        // next, so a browser must revalidate (a cheap 304 by
                        // ETag) rather than run an old uploader against a new
                        // server.
                        .wrap(
                            DefaultHeaders::new()
                                .add((header::CACHE_CONTROL, "no-cache"))
                                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
                        )
                        .service(
                            actix_files::Files::new("/", &static_dir)
                                .index_file("index.html")
                                .default_handler(web::to(http::not_found)),
                        ),
                )
            } else {
                app.default_service(web::to(http::not_found))
            }
        })
        .workers(workers)
        // A client must finish its request head in this time (slow headers).
        .client_request_timeout(header_timeout)
        .shutdown_timeout(ctx.settings.shutdown_timeout.as_secs())
        // actix would treat SIGINT as a forced stop, SIGTERM as a graceful
        // one; `run_until_stopped` handles both signals itself, alike.
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Application { port, server, ctx })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn context(&self) -> &AppContext {
        &self.ctx
    }

    /// A handle that stops the server gracefully (for tests and embedding).
    /// Cancel [`AppContext::stopping`] first, as a signal does, or live event
    /// streams hold the stop until `shutdown_timeout`.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/ctrl-c (or [`Application::handle`]'s stop), then
    /// lets in-flight requests finish within `shutdown_timeout` and stops the
    /// janitor. A second SIGTERM/ctrl-c meanwhile stops at once.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let shutdown = CancellationToken::new();
        let janitor = tokio::spawn(janitor::run(
            self.ctx.clone(),
            self.ctx.settings.janitor_interval,
            shutdown.clone(),
        ));
        let delivery = spawn_delivery(&self.ctx, &shutdown);
        let forced = CancellationToken::new();
        let signals = tokio::spawn(stop_on_signals(
            self.server.handle(),
            self.ctx.settings.shutdown_timeout,
            self.ctx.stopping.clone(),
            forced.clone(),
        ));
        let settings = &self.ctx.settings;
        tracing::info!(
            port = self.port,
            store = %store_description(settings),
            data_dir = %settings.data_dir.display(),
            durability = ?settings.durability,
            auth = %auth_description(&settings.auth),
            "tranche is listening"
        );
        let server = self.server;
        let result = tokio::select! {
            result = server => result,
            // Dropping the server mid-way through a graceful stop stops its
            // workers at once (actix-server's documented drop behaviour); a
            // second stop command would wait behind the first.
            () = forced.cancelled() => Ok(()),
        };
        signals.abort();
        self.ctx.stopping.cancel();
        shutdown.cancel();
        let _ = janitor.await;
        if let Some(delivery) = delivery {
            let _ = delivery.await;
        }
        tracing::info!("tranche stopped");
        result
    }
}

/// The store, keeping an event outbox if `[events]` names a sink.
async fn events_outbox(store: Store, settings: &Settings) -> anyhow::Result<Store> {
    if !settings.events.enabled() {
        return Ok(store);
    }
    let progress = settings.events.progress_interval;
    let outbox = crate::events::OutboxSettings {
        max_len: settings.events.outbox_max,
        progress_ms: (!progress.is_zero()).then(|| progress.as_millis().max(1) as i64),
    };
    store
        .with_outbox(outbox)
        .await
        .context("cannot set up the event outbox")
}

/// Starts the delivery of events to the sinks of `[events]`, if any.
fn spawn_delivery(
    ctx: &AppContext,
    shutdown: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !ctx.settings.events.enabled() {
        return None;
    }
    // The settings were checked at load: building the sinks cannot fail.
    let sinks = match crate::events::sinks::from_settings(&ctx.settings.events) {
        Ok(sinks) => sinks,
        Err(e) => {
            tracing::error!(error = %e, "events are off: a sink cannot be built");
            return None;
        }
    };
    Some(tokio::spawn(crate::events::delivery::run(
        ctx.clone(),
        sinks,
        shutdown.clone(),
    )))
}

/// The first SIGTERM or SIGINT stops the server gracefully (no new
/// connections; requests in flight finish, for at most `timeout`; live event
/// streams, told by `stopping`, end at once); a second one, from a person
/// pressing ctrl-c again, cancels `forced`, on which the server is stopped
/// at once.
async fn stop_on_signals(
    server: actix_web::dev::ServerHandle,
    timeout: std::time::Duration,
    stopping: CancellationToken,
    forced: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT: stop tranche with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "stopping: no new connections; requests in flight may finish within {} s \
         (ctrl-c or SIGTERM again to stop at once)",
        timeout.as_secs()
    );
    stopping.cancel();
    // The command is sent at once; completion is seen when the server returns.
    drop(server.stop(true));
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::warn!(
        signal = name,
        "stopping at once: requests still in flight are cut"
    );
    forced.cancel();
}

/// Which state store is in use and where, for the start-up line; a Redis
/// password is not written out.
fn store_description(settings: &Settings) -> String {
    match &settings.store {
        StoreSettings::Embedded { .. } => {
            format!("embedded {}", settings.embedded_store_path().display())
        }
        StoreSettings::Redis { url, key_prefix } => {
            let shown = match reqwest::Url::parse(url) {
                Ok(mut u) if u.password().is_some() => {
                    let _ = u.set_password(Some("***"));
                    u.to_string()
                }
                Ok(u) => u.to_string(),
                Err(_) => "(unparsable URL)".to_owned(),
            };
            format!("redis {shown} prefix {key_prefix:?}")
        }
    }
}

/// The authentication mode for the start-up line: off, or on with the
/// credentials it takes.
fn auth_description(auth: &crate::config::AuthSettings) -> String {
    if !auth.enabled {
        return if auth.allow_anonymous {
            "off (allow_anonymous)".to_owned()
        } else {
            "off".to_owned()
        };
    }
    let mut takes = Vec::new();
    if !auth.api_keys.is_empty() || auth.api_keys_file.is_some() {
        takes.push("API keys");
    }
    if auth.jwt_secret.is_some() || auth.jwt_secret_file.is_some() {
        takes.push("tokens");
    }
    if auth.public_downloads {
        takes.push("public downloads");
    }
    if auth.public_metrics {
        takes.push("public metrics");
    }
    format!("on ({})", takes.join(", "))
}

/// How long start-up waits for Redis: services often start together (systemd,
/// compose), and Redis may come up a few seconds after tranche.
const REDIS_STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn connect_redis(url: &str, prefix: &str) -> anyhow::Result<RedisStore> {
    let started = std::time::Instant::now();
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        match RedisStore::connect(url, prefix).await {
            Ok(store) => return Ok(store),
            Err(e) if started.elapsed() + delay < REDIS_STARTUP_WAIT => {
                tracing::warn!(error = %e, url, "Redis is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(4));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot reach Redis at {url} (waited {} s)",
                        started.elapsed().as_secs()
                    )
                })
            }
        }
    }
}

/// The checks of a configuration that need no disk, store or network: what
/// `tranche check-config` runs, and `serve` before anything else. Returns
/// the authenticator (secrets read and checked).
pub fn preflight(settings: &Settings) -> anyhow::Result<Authenticator> {
    check_exposure(settings)?;
    Authenticator::from_settings(&settings.auth, settings.upload_ttl)
        .context("invalid [auth] settings")
}

/// Refuses to serve without authentication on an address other machines can
/// reach, unless the operator said so (`auth.allow_anonymous` or `--insecure`).
pub fn check_exposure(settings: &Settings) -> anyhow::Result<()> {
    if settings.auth.enabled || settings.auth.allow_anonymous {
        return Ok(());
    }
    let addr: std::net::SocketAddr = settings
        .bind
        .parse()
        .with_context(|| format!("bind address {} is not an IP:port", settings.bind))?;
    if addr.ip().is_loopback() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen on {} with authentication off: anyone on the network could \
         upload and delete. Enable [auth] (see README, Security), or pass --insecure \
         (auth.allow_anonymous = true) if something in front of tranche authenticates",
        settings.bind
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_line_hides_a_redis_password() {
        let settings = Settings {
            store: StoreSettings::Redis {
                url: "redis://user:s3cret@127.0.0.1:6379/2".into(),
                key_prefix: "tranche".into(),
            },
            ..Settings::default()
        };
        let shown = store_description(&settings);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.starts_with("redis redis://user:***@127.0.0.1:6379/2"),
            "{shown}"
        );
    }

    #[test]
    fn the_start_up_line_names_the_auth_mode() {
        let mut auth = crate::config::AuthSettings::default();
        assert_eq!(auth_description(&auth), "off");
        auth.enabled = true;
        auth.api_keys = vec!["k".into()];
        auth.jwt_secret = Some("s".into());
        assert_eq!(auth_description(&auth), "on (API keys, tokens)");
    }
}
