//! `walcast status`: one screen with the health of every component, the source's slot lag and
//! each sink target's lag, read from their admin endpoints (`/ready`, `/metrics`).
//! Exits 1 when any component is not ready, so scripts and probes can use it.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
            "source" => {
                let v = |m: &str| samples.get(m).and_then(|s| s.first()).map(|(_, v)| *v);
                println!(
                    "           slot lag {} bytes, confirmed LSN {}, {} events published, {} dead letters",
                    fmt(v("walcast_source_slot_lag_bytes")),
                    v("walcast_source_confirmed_lsn")
                        .map(|l| lsn(l as u64))
                        .unwrap_or("-".into()),
                    fmt(v("walcast_source_events_published_total")),
                    fmt(v("walcast_source_dead_letters_total")),
                );
            }
            "sink" => {
                let by_target = |m: &str| -> BTreeMap<String, f64> {
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
                for (target, is_up) in &up {
                    println!(
                        "           target {target:<14} {:<5} lag {} messages, {} applied, last commit LSN {}",
                        if *is_up >= 1.0 { "up" } else { "DOWN" },
                        fmt(lag.get(target).copied()),
                        fmt(applied.get(target).copied()),
                        at.get(target).map(|l| lsn(*l as u64)).unwrap_or("-".into()),
                    );
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

fn fmt(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_else(|| "-".into())
}

fn lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

/// metric name → (value of its `target` label or "", value), for the simple samples we show.
fn parse(text: &str) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut out: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let target = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("target=\""))
            .map(|v| v.trim_end_matches(['}', '"']).to_owned())
            .unwrap_or_default();
        out.entry(name.to_owned())
            .or_default()
            .push((target, value));
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
            vec![("replica-1".to_owned(), 1.0)]
        );
        assert_eq!(
            m["walcast_source_slot_lag_bytes"],
            vec![(String::new(), 58360.0)]
        );
        assert_eq!(lsn(0x1_DB07_88), "0/1DB0788");
        assert_eq!(lsn((0x16 << 32) | 0xB374_D848), "16/B374D848");
    }
}
