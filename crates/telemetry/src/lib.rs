//! Telemetry shared by walcast's long-running services (source, sink, catalog app):
//!
//! * [`logging`]: `tracing` output, human-readable by default, JSON lines with `--log-json`;
//! * [`metrics`]: counters, gauges and histograms rendered in the Prometheus text format;
//! * [`admin`]: the HTTP endpoint with `/health` (the process is alive), `/ready` (it is doing
//!   its job) and `/metrics`, bound to 127.0.0.1 unless an operator says otherwise;
//! * [`progress`]: the progress line (rate, ETA) of long operator commands.

pub mod admin;
pub mod logging;
pub mod metrics;
pub mod progress;
