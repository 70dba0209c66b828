//! A small Prometheus registry: lock-free updates on the hot path, text rendering on scrape.
//!
//! Metric names follow Prometheus conventions (`_total` for counters, `_seconds`/`_bytes` for
//! units) and label values are low-cardinality (a target name, never an event id).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where services register their metrics. Cloning shares the registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Vec<Entry>>>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    help: String,
    labels: Vec<(String, String)>,
    metric: Metric,
}

#[derive(Debug)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    WholeGauge(WholeGauge),
    Histogram(Histogram),
}

impl Metric {
    fn kind(&self) -> &'static str {
        match self {
            Metric::Counter(_) => "counter",
            Metric::Gauge(_) | Metric::WholeGauge(_) => "gauge",
            Metric::Histogram(_) => "histogram",
        }
    }
}

type Labels<'a> = &'a [(&'a str, &'a str)];

impl Registry {
    pub fn counter(&self, name: &str, help: &str, labels: Labels<'_>) -> Counter {
        let c = Counter::default();
        self.register(name, help, labels, Metric::Counter(c.clone()));
        c
    }

    pub fn gauge(&self, name: &str, help: &str, labels: Labels<'_>) -> Gauge {
        let g = Gauge::default();
        self.register(name, help, labels, Metric::Gauge(g.clone()));
        g
    }

    /// A gauge of whole numbers, rendered digit for digit (see [`WholeGauge`]).
    pub fn whole_gauge(&self, name: &str, help: &str, labels: Labels<'_>) -> WholeGauge {
        let g = WholeGauge::default();
        self.register(name, help, labels, Metric::WholeGauge(g.clone()));
        g
    }

    /// A histogram with the given upper bounds (ascending; `+Inf` is implied).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: Labels<'_>,
        buckets: &[f64],
    ) -> Histogram {
        let h = Histogram::new(buckets);
        self.register(name, help, labels, Metric::Histogram(h.clone()));
        h
    }

    fn register(&self, name: &str, help: &str, labels: Labels<'_>, metric: Metric) {
        let entry = Entry {
            name: name.to_owned(),
            help: help.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            metric,
        };
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut order: Vec<&Entry> = entries.iter().collect();
        order.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = String::new();
        let mut last_name = "";
        for e in order {
            if e.name != last_name {
                let _ = writeln!(out, "# HELP {} {}", e.name, e.help.replace('\n', " "));
                let _ = writeln!(out, "# TYPE {} {}", e.name, e.metric.kind());
                last_name = &e.name;
            }
            match &e.metric {
                Metric::Counter(c) => sample(&mut out, &e.name, &e.labels, None, c.get() as f64),
                Metric::Gauge(g) => sample(&mut out, &e.name, &e.labels, None, g.get()),
                Metric::WholeGauge(g) => {
                    sample_text(&mut out, &e.name, &e.labels, None, &g.get().to_string());
                }
                Metric::Histogram(h) => h.render(&mut out, &e.name, &e.labels),
            }
        }
        out
    }
}

fn sample(out: &mut String, name: &str, labels: &[(String, String)], le: Option<&str>, v: f64) {
    sample_text(out, name, labels, le, &format_value(v));
}

fn sample_text(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let extra = le.map(|le| ("le".to_owned(), le.to_owned()));
        for (k, val) in labels.iter().chain(extra.as_ref()) {
            if !first {
                out.push(',');
            }
            first = false;
            let escaped = val
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{escaped}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A gauge of whole numbers up to `u64::MAX`, such as an LSN.
///
/// Rendered as its decimal digits: the text keeps every bit, where a [`Gauge`]'s `f64` keeps
/// 53 (an LSN above 2^53 would be shown rounded). Prometheus itself still stores it as a float;
/// readers of the text (`walcast status`) get it exactly.
#[derive(Debug, Clone, Default)]
pub struct WholeGauge(Arc<AtomicU64>);

impl WholeGauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts of observations per bucket, their sum and count.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: Vec<f64>,
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
}

/// Latency buckets from 1 ms to 60 s, for commit-to-acknowledgement and apply latencies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram(Arc::new(HistogramInner {
            bounds: bounds.to_vec(),
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, v: f64) {
        let h = &self.0;
        if let Some(i) = h.bounds.iter().position(|b| v <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        let _ = h
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &[(String, String)]) {
        let h = &self.0;
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (bound, n) in h.bounds.iter().zip(&h.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            sample(
                out,
                &bucket,
                labels,
                Some(&format_value(*bound)),
                cumulative as f64,
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        sample(out, &bucket, labels, Some("+Inf"), count as f64);
        let sum = f64::from_bits(h.sum.load(Ordering::Relaxed));
        sample(out, &format!("{name}_sum"), labels, None, sum);
        sample(out, &format!("{name}_count"), labels, None, count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        let a = r.counter(
            "walcast_events_total",
            "Events.",
            &[("target", "replica-1")],
        );
        let b = r.counter("walcast_events_total", "Events.", &[("target", "re\"d")]);
        let g = r.gauge("walcast_slot_lag_bytes", "Lag.", &[]);
        let w = r.whole_gauge("walcast_confirmed_lsn", "LSN.", &[]);
        let h = r.histogram("walcast_latency_seconds", "Latency.", &[], &[0.1, 1.0]);
        a.inc_by(3);
        b.inc();
        g.set(42.0);
        w.set((1 << 53) + 1);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let text = r.render();
        assert_eq!(
            text.matches("# TYPE walcast_events_total counter").count(),
            1
        );
        assert!(
            text.contains("walcast_events_total{target=\"replica-1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("walcast_events_total{target=\"re\\\"d\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("walcast_slot_lag_bytes 42\n"), "{text}");
        assert!(
            text.contains("# TYPE walcast_confirmed_lsn gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("walcast_confirmed_lsn 9007199254740993\n"),
            "{text}"
        );
        assert!(
            text.contains("walcast_latency_seconds_bucket{le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("walcast_latency_seconds_bucket{le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("walcast_latency_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("walcast_latency_seconds_sum 5.55\n"),
            "{text}"
        );
        assert!(text.contains("walcast_latency_seconds_count 3\n"), "{text}");
    }
}
