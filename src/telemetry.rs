//! Logs (tracing, text or JSON) and metrics (Prometheus text format, §11).
//!
//! Counters the fold keeps itself (accepted, rejected, duplicates) are
//! copied into the registry by `export_fold_stats`, so the hot path pays
//! nothing for them.

use std::sync::OnceLock;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::LogConfig;
use crate::event::Topic;
use crate::event::decode::Reason;
use crate::state::snapshot::Snapshot;

/// Installs the tracing subscriber once; later calls are no-ops.
pub fn init_logging(cfg: &LogConfig) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{},librdkafka=warn", cfg.level)));
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        let _ = if cfg.format == "json" { builder.json().try_init() } else { builder.try_init() };
    });
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0],
            )
            .expect("static bucket list is valid");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // A recorder may already be installed (tests embedding several engines);
        // the handle then still renders this recorder's view.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Copies the fold's own counters and gauges into the registry.
pub fn export_fold_stats(snapshot: &Snapshot) {
    let stats = snapshot.stats();
    for topic in Topic::ALL {
        counter!("cspulse_events_accepted_total", "topic" => topic.default_name())
            .absolute(stats.accepted[topic.index()]);
    }
    for reason in Reason::ALL {
        counter!("cspulse_events_rejected_total", "reason" => reason.as_str()).absolute(stats.rejected[reason.index()]);
    }
    counter!("cspulse_events_duplicate_total").absolute(stats.duplicates);
    for kind in crate::state::LimitKind::ALL {
        counter!("cspulse_limit_overflow_total", "kind" => kind.as_str()).absolute(stats.limit_overflow[kind.index()]);
    }
    gauge!("cspulse_accounts").set(snapshot.account_count() as f64);
    if let Some(w) = snapshot.now {
        gauge!("cspulse_watermark_seconds").set(w as f64 / 1e6);
    }
}
