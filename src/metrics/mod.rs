//! Metrics: the Prometheus exposition of what the daemon counts, and the
//! endpoint that serves it (`monitoring.metrics_port`; off by default,
//! loopback when on). The counting itself is the engine's
//! (`crate::engine::meter`): this layer reads the engine, the arenas and the
//! network layer's counters on each scrape and renders them.
//!
//! **Serving** is a small HTTP/1.1 server on its own thread: one request per
//! connection, handled in turn, the request head bounded to
//! [`MAX_REQUEST`] bytes and [`REQUEST_TIMEOUT`], `GET /metrics` answered in
//! the text exposition format 0.0.4, anything else refused with a 4xx. The
//! thread sleeps in poll(2) on the listener and an eventfd, so it costs
//! nothing between scrapes and stops at once.
//!
//! [`snapshot`] reads the runtime, [`text`] writes the exposition format,
//! [`http`] serves it.

pub mod http;
pub mod snapshot;
pub mod text;

pub use crate::engine::meter::{BUCKETS, METHOD_SLOTS, MODULE_SLOTS, OTHER, POOL_SLOTS};
pub use http::{CONTENT_TYPE, MAX_REQUEST, MetricsError, REQUEST_TIMEOUT, Server};
pub use snapshot::{SegmentRow, Snapshot, WorkerRow, gather};
pub use text::render;

#[cfg(test)]
mod tests;
