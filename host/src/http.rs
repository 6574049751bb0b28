//! The HTTP side: health and Prometheus metrics.
//!
//! `/health/live` answers as soon as the process runs; `/health/ready` only
//! once the node has re-applied everything committed and serves clients.

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::server::Shared;

#[derive(Clone)]
struct Http {
    shared: Arc<Shared>,
    prometheus: PrometheusHandle,
}

/// The Prometheus exporter, with histogram buckets: seconds for latencies,
/// counts for batch sizes.
pub fn prometheus_builder() -> PrometheusBuilder {
    let seconds =
        [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
    let counts = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
    PrometheusBuilder::new()
        .set_buckets(&seconds)
        .expect("buckets are not empty")
        .set_buckets_for_metric(Matcher::Suffix("_entries".into()), &counts)
        .expect("buckets are not empty")
}

pub fn router(shared: Arc<Shared>, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(Http { shared, prometheus })
}

async fn ready(State(h): State<Http>) -> (StatusCode, String) {
    let m = h.shared.raft.metrics().borrow_watched().clone();
    let applied = m.last_applied.map_or(0, |l| l.index);
    let committed = m.local_committed.map_or(0, |l| l.index);
    if h.shared.is_ready() && m.current_leader.is_some() && applied >= committed {
        (StatusCode::OK, format!("ready: applied {applied}\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: applied {applied} of committed {committed}\n"))
    }
}

async fn render_metrics(State(h): State<Http>) -> String {
    let s = &h.shared;
    let meta = s.state.meta();
    let m = s.raft.metrics().borrow_watched().clone();
    metrics::gauge!("corral_znodes").set(meta.node_count as f64);
    metrics::gauge!("corral_data_bytes").set(meta.data_bytes as f64);
    metrics::gauge!("corral_sessions").set(s.dispatch.liveness.len() as f64);
    metrics::gauge!("corral_watches").set(s.dispatch.watches.lock().count() as f64);
    metrics::gauge!("corral_raft_term").set(m.current_term as f64);
    let applied = m.last_applied.map_or(0, |l| l.index);
    let committed = m.local_committed.map_or(0, |l| l.index);
    metrics::gauge!("corral_raft_applied_index").set(applied as f64);
    metrics::gauge!("corral_raft_committed_index").set(committed as f64);
    metrics::gauge!("corral_raft_apply_lag").set(committed.saturating_sub(applied) as f64);
    metrics::gauge!("corral_raft_is_leader").set(if s.raft.is_leader() { 1.0 } else { 0.0 });
    h.prometheus.render()
}
