//! Logging: `tracing` with an `EnvFilter` (`RUST_LOG` wins over `log.level`),
//! as text for people or JSON for log collectors.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber; a second call (as in tests) is a no-op.
pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The request span of `tracing-actix-web`, plus one log line per request when
/// it ends (`method`, `path`, `status`, `duration_ms`): the access log. Handler
/// spans below it carry `upload_id` and `chunk`.
pub struct AccessLog;

struct Started(std::time::Instant);

impl tracing_actix_web::RootSpanBuilder for AccessLog {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use actix_web::HttpMessage;
        request
            .extensions_mut()
            .insert(Started(std::time::Instant::now()));
        tracing_actix_web::root_span!(request, upload_id = tracing::field::Empty)
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        use actix_web::HttpMessage;
        if let Ok(response) = outcome {
            let req = response.request();
            let duration_ms = req
                .extensions()
                .get::<Started>()
                .map(|s| s.0.elapsed().as_secs_f64() * 1000.0)
                .unwrap_or_default();
            let status = response.status().as_u16();
            let _enter = span.enter();
            tracing::info!(
                method = %req.method(),
                path = req.path(),
                status,
                duration_ms = format_args!("{duration_ms:.1}"),
                "request"
            );
        }
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
