//! `walcast status`: one screen with the health of every component, the source's slot lag and
//! each sink target's lag, read from their admin endpoints (`/ready`, `/metrics`).
//! Exits 1 when any component is not ready, so scripts and probes can use it.
//!
//! LSNs are read from the metrics' text, digit for digit: the services render their LSN gauges
//! as whole numbers (`WholeGauge`), which an `f64` could not hold above 2^53.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use walcast_replication::Lsn;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The source's admin address.
    #[arg(long, env = "WALCAST_STATUS_SOURCE", default_value = "127.0.0.1:9464")]
    source: String,
    /// The sink's admin address.
    #[arg(long, env = "WALCAST_STATUS_SINK", default_value = "127.0.0.1:9465")]
    sink: String,
    /// The catalog write API's address (serves /ready too).
    #[arg(long, env = "WALCAST_STATUS_APP", default_value = "127.0.0.1:3000")]
    app: String,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let mut all_ready = true;
    println!("{:<8} {:<12} detail", "part", "health");
    for (name, addr) in [
        ("source", &args.source),
        ("sink", &args.sink),
        ("app", &args.app),
    ] {
        let (health, reason) = match get(addr, "/ready").await {
            Ok((200, body)) => ("ready", body),
            Ok((_, body)) => ("NOT READY", body),
            Err(e) => ("DOWN", e.to_string()),
        };
        all_ready &= health == "ready";
        println!("{name:<8} {health:<12} {} ({addr})", reason.trim());
        let Ok((200, metrics)) = get(addr, "/metrics").await else {
            continue;
        };
        let samples = parse(&metrics);
        match name {
            "source" => println!("{}", source_detail(&samples)),
            "sink" => {
                for line in sink_details(&samples) {
                    println!("{line}");
                }
            }
            _ => {}
        }
    }
    if all_ready {
        Ok(())
    } else {
        anyhow::bail!("some components are not ready (see above)")
    }
}

/// The source's line: slot lag, confirmed LSN, events and dead letters.
fn source_detail(samples: &Samples) -> String {
    let v = |m: &str| {
        samples
            .get(m)
            .and_then(|s| s.first())
            .map(|(_, v)| v.as_str())
    };
    format!(
        "           slot lag {} bytes, confirmed LSN {}, {} events published, {} dead letters",
        fmt(v("walcast_source_slot_lag_bytes")),
        fmt_lsn(v("walcast_source_confirmed_lsn")),
        fmt(v("walcast_source_events_published_total")),
        fmt(v("walcast_source_dead_letters_total")),
    )
}

/// One line per sink target: up, lag, events applied, applied commit LSN.
fn sink_details(samples: &Samples) -> Vec<String> {
    let by_target = |m: &str| -> BTreeMap<String, String> {
        samples
            .get(m)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    };
    let (up, lag) = (
        by_target("walcast_sink_target_up"),
        by_target("walcast_sink_lag_messages"),
    );
    let (applied, at) = (
        by_target("walcast_sink_events_applied_total"),
        by_target("walcast_sink_applied_commit_lsn"),
    );
    up.iter()
        .map(|(target, is_up)| {
            format!(
                "           target {target:<14} {:<5} lag {} messages, {} applied, last commit LSN {}",
                if number(is_up).is_some_and(|v| v >= 1.0) { "up" } else { "DOWN" },
                fmt(lag.get(target).map(String::as_str)),
                fmt(applied.get(target).map(String::as_str)),
                fmt_lsn(at.get(target).map(String::as_str)),
            )
        })
        .collect()
}

fn number(text: &str) -> Option<f64> {
    text.parse().ok()
}

fn fmt(v: Option<&str>) -> String {
    v.and_then(number)
        .map(|v| format!("{v}"))
        .unwrap_or_else(|| "-".into())
}

/// An LSN gauge's text: its digits when it is a whole number (exact), else (a service that
/// renders it as a float) the float, rounded.
fn fmt_lsn(v: Option<&str>) -> String {
    let exact = |t: &str| t.parse::<u64>().ok();
    let rounded = |t: &str| number(t).map(|f| f as u64);
    v.and_then(|t| exact(t).or_else(|| rounded(t)))
        .map(|l| Lsn(l).to_string())
        .unwrap_or_else(|| "-".into())
}

/// metric name → (value of its `target` label or "", value as written).
type Samples = BTreeMap<String, Vec<(String, String)>>;

/// The simple samples we show, from the Prometheus text; values that are not numbers are
/// left out.
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if number(value).is_none() {
            continue;
        }
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let target = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("target=\""))
            .map(|v| v.trim_end_matches(['}', '"']).to_owned())
            .unwrap_or_default();
        out.entry(name.to_owned())
            .or_default()
            .push((target, value.to_owned()));
    }
    out
}

/// A minimal HTTP/1.1 GET with a 3 s limit: status code and body.
async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 3 s"))??;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target_labels_and_formats_lsns() {
        let text = "# HELP x\nwalcast_sink_target_up{target=\"replica-1\"} 1\n\
                    walcast_source_slot_lag_bytes{slot=\"s\"} 58360\n";
        let m = parse(text);
        assert_eq!(
            m["walcast_sink_target_up"],
            vec![("replica-1".to_owned(), "1".to_owned())]
        );
        assert_eq!(
            m["walcast_source_slot_lag_bytes"],
            vec![(String::new(), "58360".to_owned())]
        );
        assert_eq!(fmt_lsn(Some("31131528")), "0/1DB0788");
        assert_eq!(fmt_lsn(Some("97500059720")), "16/B374D848");
        assert_eq!(fmt_lsn(Some("9.7500059720e10")), "16/B374D848");
        assert_eq!(fmt_lsn(None), "-");
    }

    /// LSNs are 64-bit; a gauge's f64 keeps 53 bits. 2^53 + 1 is `200000/1`, and above 2^53
    /// an f64 cannot hold every LSN: the screen must still show the exact one.
    #[test]
    fn shows_lsns_above_2_pow_53_exactly() {
        let exact = walcast_replication::Lsn((1 << 53) + 1);
        let registry = walcast_telemetry::metrics::Registry::default();
        let source = walcast_source::metrics::SourceMetrics::new(&registry, "s");
        source.confirmed_lsn.set(exact.as_u64());
        let line = source_detail(&parse(&registry.render()));
        assert!(line.contains("confirmed LSN 200000/1,"), "{line}");

        let sink = "walcast_sink_target_up{target=\"t\"} 1\n\
                    walcast_sink_applied_commit_lsn{target=\"t\"} 18446744073709551615\n\
                    walcast_sink_target_up{target=\"u\"} 1\n\
                    walcast_sink_applied_commit_lsn{target=\"u\"} 9007199254740993\n";
        let lines = sink_details(&parse(sink));
        assert!(
            lines[0].ends_with("last commit LSN FFFFFFFF/FFFFFFFF"),
            "{lines:?}"
        );
        assert!(lines[1].ends_with("last commit LSN 200000/1"), "{lines:?}");
    }
}
