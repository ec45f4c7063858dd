//! Logging: `tracing` with an `EnvFilter` (`RUST_LOG` wins over `log.level`),
//! as text for people or JSON for log collectors.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};
use crate::context::AppContext;
use crate::http::forwarded;

/// Installs the global subscriber; a second call (as in tests) is a no-op.
pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: not in journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // The innermost span's fields once ("span"), not again in a list.
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The root span of every request, and one log line per request when it ends
/// (`method`, `path`, `status`, `duration_ms`): the access log. The span
/// carries `client_ip` (behind trusted proxies, the address they forwarded;
/// see [`crate::http::forwarded`]), `request_id`, and what handlers record on it:
/// `upload_id`, `chunk` (index) and `bytes` (the chunk's stored length).
///
/// Built by hand rather than with `tracing_actix_web::root_span!`, whose
/// client address and host come from forwarded headers of any sender.
pub struct AccessLog;

struct Started(std::time::Instant);

impl tracing_actix_web::RootSpanBuilder for AccessLog {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use actix_web::HttpMessage;
        use tracing::field::Empty;
        request
            .extensions_mut()
            .insert(Started(std::time::Instant::now()));
        let client_ip = request
            .app_data::<actix_web::web::Data<AppContext>>()
            .map(|ctx| forwarded::client_ip(request.request(), &ctx.settings.trusted_proxies));
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .copied();
        tracing::info_span!(
            "request",
            client_ip = client_ip.map(display),
            request_id = request_id.map(display),
            upload_id = Empty,
            chunk = Empty,
            bytes = Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        use actix_web::HttpMessage;
        let (req, status) = match outcome {
            Ok(response) => (response.request(), response.status().as_u16()),
            // Errors that escaped every handler: rare, but they are requests too.
            Err(e) => {
                let _enter = span.enter();
                tracing::warn!(status = e.as_response_error().status_code().as_u16(), error = %e, "request");
                return;
            }
        };
        // A number (not a string) in JSON logs, to 0.1 ms.
        let duration_ms = req
            .extensions()
            .get::<Started>()
            .map(|s| (s.0.elapsed().as_secs_f64() * 10_000.0).round() / 10.0)
            .unwrap_or_default();
        let _enter = span.enter();
        tracing::info!(
            method = %req.method(),
            path = req.path(),
            status,
            duration_ms,
            "request"
        );
    }
}
