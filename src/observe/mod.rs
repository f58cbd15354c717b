//! What the server tells its operators about the requests it serves: the
//! access log and the metrics (Prometheus exporter, statsd).

pub mod access_log;
pub mod metrics;
