//! Prometheus metrics: what an operator graphs and alerts on.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Uploads by how they ended: `created`, `completed`, `failed`, `aborted`, `expired`.
    pub uploads: IntCounterVec,
    pub chunks_received: IntCounter,
    pub chunk_bytes_received: IntCounter,
    pub chunk_duration: Histogram,
    pub chunks_in_flight: IntGauge,
    pub assembly_duration: Histogram,
    pub janitor_deleted: IntCounterVec,
    pub janitor_freed_bytes: IntCounter,
    /// Background sweeps run (whatever they found): a janitor that stopped
    /// shows as a flat line.
    pub janitor_sweeps: IntCounter,
    pub store_errors: IntCounter,
    pub free_disk_bytes: IntGauge,
    /// Times the embedded store was opened again after an I/O error.
    pub store_reopens: IntGauge,
    /// 1 while the state reserve is given up to a full disk.
    pub state_reserve_released: IntGauge,
    /// Completed files deleted, by `reason`: `request`, `retention`, `download`.
    pub files_deleted: IntCounterVec,
    /// How long past its retention the last sweep's latest file was deleted.
    pub file_deletion_lag: Gauge,
    /// Completed files the scrub re-hashed, found changed, found without a record.
    pub scrub_files: IntCounter,
    pub scrub_mismatches: IntCounter,
    pub scrub_orphans: IntCounter,
    /// Completed files whose record the scrub found without their bytes.
    pub scrub_missing: IntCounter,
    pub events: EventMetrics,
    /// Blocking hook calls, by `hook` and `outcome`: `allow`, `deny`, `error`.
    pub hook_calls: IntCounterVec,
}

/// The `event` label values of `tranche_uploads_total`.
/// `deduplicated`: a create answered from a stored file (counted as created too).
pub const UPLOAD_EVENTS: [&str; 6] = [
    "created",
    "completed",
    "failed",
    "aborted",
    "expired",
    "deduplicated",
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let uploads = IntCounterVec::new(
            Opts::new(
                "tranche_uploads_total",
                "Uploads by event: created, completed, failed, aborted, expired",
            ),
            &["event"],
        )
        .expect("valid metric");
        let chunks_received =
            IntCounter::new("tranche_chunks_received_total", "Chunks stored and counted")
                .expect("valid metric");
        let chunk_bytes_received = IntCounter::new(
            "tranche_chunk_received_bytes_total",
            "Bytes of chunks stored and counted",
        )
        .expect("valid metric");
        let chunk_duration = Histogram::with_opts(
            HistogramOpts::new(
                "tranche_chunk_request_duration_seconds",
                "Time to receive, store and count one chunk",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("valid metric");
        let chunks_in_flight = IntGauge::new(
            "tranche_chunks_in_flight",
            "Chunk requests being received now",
        )
        .expect("valid metric");
        let assembly_duration = Histogram::with_opts(
            HistogramOpts::new(
                "tranche_assembly_duration_seconds",
                "Time from complete's start to the file being published",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
            ]),
        )
        .expect("valid metric");
        let janitor_deleted = IntCounterVec::new(
            Opts::new(
                "tranche_janitor_deleted_total",
                "What the janitor removed: upload, orphan",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let janitor_sweeps = IntCounter::new(
            "tranche_janitor_sweeps_total",
            "Background janitor sweeps run, whatever they found",
        )
        .expect("valid metric");
        let janitor_freed_bytes = IntCounter::new(
            "tranche_janitor_freed_bytes_total",
            "Disk bytes the janitor freed",
        )
        .expect("valid metric");
        let store_errors = IntCounter::new(
            "tranche_store_errors_total",
            "State store calls that failed (unreachable, commit failed)",
        )
        .expect("valid metric");
        let free_disk_bytes = IntGauge::new(
            "tranche_data_dir_free_bytes",
            "Free bytes on the data directory's filesystem",
        )
        .expect("valid metric");
        let store_reopens = IntGauge::new(
            "tranche_state_store_reopens",
            "Times the embedded state store was opened again after an I/O error (a full disk, say), since start",
        )
        .expect("valid metric");
        let state_reserve_released = IntGauge::new(
            "tranche_state_reserve_released",
            "1 while the state reserve is given up to a full disk and new uploads are refused",
        )
        .expect("valid metric");
        let files_deleted = IntCounterVec::new(
            Opts::new(
                "tranche_files_deleted_total",
                "Completed files deleted, by reason: request, retention",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let file_deletion_lag = Gauge::new(
            "tranche_file_deletion_lag_seconds",
            "In the last janitor sweep, the longest a deleted file outlived its retention (at most one janitor_interval)",
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let scrub_files = counter(
            "tranche_scrub_files_total",
            "Completed files the scrub re-hashed",
        );
        let scrub_mismatches = counter(
            "tranche_scrub_mismatches_total",
            "Completed files whose bytes no longer match their recorded SHA-256",
        );
        let scrub_orphans = counter(
            "tranche_scrub_orphans_total",
            "Files in the data directory that no record names, seen by the scrub",
        );
        let scrub_missing = counter(
            "tranche_scrub_missing_total",
            "Completed files whose record is there but whose bytes are not, seen by the scrub",
        );
        for c in [
            Box::new(files_deleted.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(scrub_missing.clone()),
            Box::new(scrub_files.clone()),
            Box::new(scrub_mismatches.clone()),
            Box::new(scrub_orphans.clone()),
            Box::new(file_deletion_lag.clone()),
            Box::new(uploads.clone()),
            Box::new(store_reopens.clone()),
            Box::new(state_reserve_released.clone()),
            Box::new(chunks_received.clone()),
            Box::new(chunk_bytes_received.clone()),
            Box::new(chunk_duration.clone()),
            Box::new(chunks_in_flight.clone()),
            Box::new(assembly_duration.clone()),
            Box::new(janitor_deleted.clone()),
            Box::new(janitor_freed_bytes.clone()),
            Box::new(janitor_sweeps.clone()),
            Box::new(store_errors.clone()),
            Box::new(free_disk_bytes.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Every series exists from the start at 0, so that an alert on a
        // rate (say of failed uploads) has something to evaluate before the
        // first such event.
        for event in UPLOAD_EVENTS {
            uploads.with_label_values(&[event]);
        }
        for kind in ["upload", "orphan"] {
            janitor_deleted.with_label_values(&[kind]);
        }
        for reason in ["request", "retention", "download"] {
            files_deleted.with_label_values(&[reason]);
        }
        let events = EventMetrics::register(&registry);
        let hook_calls = IntCounterVec::new(
            Opts::new(
                "tranche_hook_calls_total",
                "Blocking hook calls by hook and outcome: allow, deny, error",
            ),
            &["hook", "outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(hook_calls.clone()))
            .expect("metric names are unique");
        Metrics {
            registry,
            uploads,
            chunks_received,
            chunk_bytes_received,
            chunk_duration,
            chunks_in_flight,
            assembly_duration,
            janitor_deleted,
            janitor_freed_bytes,
            janitor_sweeps,
            store_errors,
            free_disk_bytes,
            store_reopens,
            state_reserve_released,
            files_deleted,
            file_deletion_lag,
            scrub_files,
            scrub_mismatches,
            scrub_orphans,
            scrub_missing,
            events,
            hook_calls,
        }
    }

    /// Counts a chunk request as in flight until the returned guard is
    /// dropped: also when the request is cancelled (its client went away),
    /// which ends the handler without running the code after its await.
    pub fn chunk_in_flight(&self) -> InFlight {
        self.chunks_in_flight.inc();
        InFlight(self.chunks_in_flight.clone())
    }

    /// Counts an upload event, one of [`UPLOAD_EVENTS`].
    pub fn upload_event(&self, event: &'static str) {
        debug_assert!(UPLOAD_EVENTS.contains(&event), "unknown event {event}");
        self.uploads.with_label_values(&[event]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The event outbox and its delivery to sinks.
#[derive(Clone)]
pub struct EventMetrics {
    /// Events in the outbox not yet taken by every sink.
    pub backlog: IntGauge,
    /// Events a sink took, by `sink`.
    pub delivered: IntCounterVec,
    /// Delivery attempts that failed (to be retried), by `sink`.
    pub failed_attempts: IntCounterVec,
    /// Events a sink never took within its retry time, given up, by `sink`.
    pub dead: IntCounterVec,
    /// Events dropped undelivered because the outbox was full.
    pub dropped: IntCounter,
}

impl EventMetrics {
    fn register(registry: &Registry) -> Self {
        let by_sink = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["sink"]).expect("valid metric")
        };
        let metrics = EventMetrics {
            backlog: IntGauge::new(
                "tranche_events_outbox_backlog",
                "Events in the outbox not yet taken by every sink",
            )
            .expect("valid metric"),
            delivered: by_sink("tranche_events_delivered_total", "Events a sink took"),
            failed_attempts: by_sink(
                "tranche_events_failed_attempts_total",
                "Event deliveries that failed and will be retried",
            ),
            dead: by_sink(
                "tranche_events_dead_total",
                "Events a sink did not take within its retry time, given up",
            ),
            dropped: IntCounter::new(
                "tranche_events_dropped_total",
                "Events dropped undelivered because the outbox was full",
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(metrics.backlog.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.delivered.clone()),
            Box::new(metrics.failed_attempts.clone()),
            Box::new(metrics.dead.clone()),
            Box::new(metrics.dropped.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        metrics
    }
}

/// One chunk request in [`Metrics::chunks_in_flight`], for as long as it lives.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_chunk_request_leaves_the_in_flight_gauge() {
        let metrics = Metrics::new();
        let request = async {
            let _in_flight = metrics.chunk_in_flight();
            std::future::pending::<()>().await;
        };
        // The request future is dropped mid-way, as when its client goes.
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(10), request).await;
        assert!(cancelled.is_err());
        assert_eq!(metrics.chunks_in_flight.get(), 0);
    }
}
