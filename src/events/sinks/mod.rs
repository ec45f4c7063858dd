//! Where events go: each sink takes one event at a time and says whether it
//! took it. One enum dispatches to each kind, as the state stores do.

pub mod stream;
pub mod webhook;

use std::time::Duration;

use super::{Event, EventKind};
use crate::config::EventSettings;

pub use stream::StreamSink;
pub use webhook::WebhookSink;

/// A delivery that did not land; it is retried until the sink's retry time.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// What every sink does.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// For logs and metric labels: the kind and where, without secrets.
    fn name(&self) -> &str;
    /// Whether its filter lets `kind` through.
    fn wants(&self, kind: EventKind) -> bool;
    /// How long a failing event is retried before it is given up.
    fn retry_for(&self) -> Duration;
    /// Hands `event` (already serialised as `body`) over. Ok only once the
    /// receiver has it: the event then leaves the outbox for this sink.
    async fn deliver(&self, event: &Event, body: &str) -> Result<(), SinkError>;
}

pub enum AnySink {
    Webhook(WebhookSink),
    Stream(StreamSink),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnySink::Webhook($s) => $e,
            AnySink::Stream($s) => $e,
        }
    };
}

impl Sink for AnySink {
    fn name(&self) -> &str {
        dispatch!(self, s => s.name())
    }
    fn wants(&self, kind: EventKind) -> bool {
        dispatch!(self, s => s.wants(kind))
    }
    fn retry_for(&self) -> Duration {
        dispatch!(self, s => s.retry_for())
    }
    async fn deliver(&self, event: &Event, body: &str) -> Result<(), SinkError> {
        dispatch!(self, s => s.deliver(event, body).await)
    }
}

/// The sinks of `[events]`, in the order configured.
pub fn from_settings(settings: &EventSettings) -> Result<Vec<AnySink>, String> {
    let mut sinks = Vec::new();
    for (i, hook) in settings.webhooks.iter().enumerate() {
        sinks.push(AnySink::Webhook(WebhookSink::new(i, hook)?));
    }
    for (i, stream) in settings.streams.iter().enumerate() {
        sinks.push(AnySink::Stream(StreamSink::new(i, stream)?));
    }
    Ok(sinks)
}

/// A sink's event filter: the kinds it takes; empty, every kind.
struct Filter(Vec<EventKind>);

impl Filter {
    /// From the configured names (which the settings' validation checked).
    fn of(names: &[String]) -> Filter {
        Filter(names.iter().filter_map(|n| EventKind::parse(n)).collect())
    }

    fn wants(&self, kind: EventKind) -> bool {
        self.0.is_empty() || self.0.contains(&kind)
    }
}
