//! Commit → visible-on-every-target latency, read exactly from Postgres commit timestamps
//! (`track_commit_timestamp = on` on every cluster; all clusters share this machine's clock):
//! for each outbox row, the commit time of its write transaction on the leader, and on each
//! target the commit time of the sink transaction that recorded it in `processed_events`.
//! "Visible on all four" is the latest of the four. With short pruning windows (the soak)
//! [`Seen`] reads the ids repeatedly, before pruning deletes them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{Stack, connect, rss_kib, service_rss_kib};

/// Per event: (leader commit, seconds since the epoch; latency to the last target, ms).
/// Events not yet on every target are left out; the count is returned beside.
pub async fn latencies(stack: &Stack) -> Result<(Vec<(f64, f64)>, usize), String> {
    let (all, _, pending) = latencies_by_target(stack).await?;
    Ok((all, pending))
}

/// [`latencies`], plus per target: (leader commit, latency to that target in ms).
#[allow(clippy::type_complexity)]
pub async fn latencies_by_target(
    stack: &Stack,
) -> Result<(Vec<(f64, f64)>, Vec<(&'static str, Vec<(f64, f64)>)>, usize), String> {
    let mut seen = Seen::default();
    seen.poll(stack).await?;
    seen.latencies(stack).await
}

const COMMIT_SQL: &str =
    "SELECT {id}, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 FROM {table}";

/// Every `id` of `table` with the commit time of the transaction that wrote its row.
async fn commits(dsn: &str, table: &str, id: &str) -> Result<HashMap<uuid::Uuid, f64>, String> {
    let c = connect(dsn).await.map_err(|e| format!("{dsn}: {e}"))?;
    let sql = COMMIT_SQL.replace("{id}", id).replace("{table}", table);
    let rows = c
        .query(&sql, &[])
        .await
        .map_err(|e| format!("{dsn}: {e}"))?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get(0), r.get::<_, Option<f64>>(1)?)))
        .collect())
}

/// Per target, every processed event id and the commit time of the sink transaction that
/// recorded it, gathered over repeated reads: with short pruning windows (the soak) rows are
/// deleted after a while, so they are read while they are there.
#[derive(Debug, Default)]
pub struct Seen {
    by_target: BTreeMap<&'static str, HashMap<uuid::Uuid, f64>>,
}

impl Seen {
    /// Reads every target's `processed_events` and keeps what it finds.
    pub async fn poll(&mut self, stack: &Stack) -> Result<(), String> {
        for (name, dsn) in stack.targets() {
            let found = commits(&dsn, "processed_events", "event_id").await?;
            self.by_target.entry(name).or_default().extend(found);
        }
        Ok(())
    }

    /// The ids seen on `target`.
    pub fn ids(&self, target: &str) -> impl Iterator<Item = &uuid::Uuid> {
        self.by_target
            .get(target)
            .into_iter()
            .flat_map(|m| m.keys())
    }

    /// [`latencies_by_target`] over what was seen.
    #[allow(clippy::type_complexity)]
    pub async fn latencies(
        &self,
        stack: &Stack,
    ) -> Result<(Vec<(f64, f64)>, Vec<(&'static str, Vec<(f64, f64)>)>, usize), String> {
        let committed = commits(&stack.write_dsn(), "outbox_messages", "id").await?;
        let mut visible: HashMap<uuid::Uuid, (f64, u8)> = HashMap::with_capacity(committed.len());
        let mut per_target = Vec::new();
        for (name, seen) in &self.by_target {
            let mut lat: Vec<(f64, f64)> = seen
                .iter()
                .filter_map(|(id, at)| Some((*committed.get(id)?, *at)))
                .map(|(c, at)| (c, (at - c) * 1000.0))
                .collect();
            lat.sort_by(|a, b| a.0.total_cmp(&b.0));
            per_target.push((*name, lat));
            for (id, at) in seen {
                let e = visible.entry(*id).or_insert((*at, 0));
                e.0 = e.0.max(*at);
                e.1 += 1;
            }
        }
        let mut out = Vec::with_capacity(committed.len());
        let mut pending = 0;
        for (id, at) in committed {
            match visible.get(&id) {
                Some((seen, 4)) => out.push((at, (seen - at) * 1000.0)),
                _ => pending += 1,
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok((out, per_target, pending))
    }
}

/// p50 / p95 / p99 / max of latencies in ms.
pub fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "p50 {:>6.1} ms  p95 {:>6.1} ms  p99 {:>6.1} ms  max {:>7.1} ms",
        super::percentile(&ms, 50.0),
        super::percentile(&ms, 95.0),
        super::percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN)
    )
}

/// One sample of the running system.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    pub written: u64,
    pub slot_lag: Option<i64>,
    pub rss_source: Option<u64>,
    pub rss_sink: Option<u64>,
    pub rss_app: Option<u64>,
    pub rss_kafka: Option<u64>,
    /// Rows of the bookkeeping: `processed_events` and `walcast_tombstones` on the
    /// `catalog_read` target, `idempotency_keys` on the leader.
    pub rows: [Option<i64>; 3],
}

impl Sample {
    pub async fn take(stack: &Stack, at: Duration, written: u64) -> Sample {
        Sample {
            at,
            written,
            slot_lag: stack.slot_lag_bytes().await,
            rss_source: service_rss_kib(&stack.source),
            rss_sink: service_rss_kib(&stack.sink),
            rss_app: stack.app.as_ref().and_then(service_rss_kib),
            rss_kafka: kafka_pid(stack).and_then(rss_kib),
            rows: bookkeeping_rows(stack).await,
        }
    }
}

/// `processed_events` and `walcast_tombstones` rows on the `catalog_read` target and
/// `idempotency_keys` rows on the leader (exact counts: these tables stay small when pruned).
async fn bookkeeping_rows(stack: &Stack) -> [Option<i64>; 3] {
    let count = |dsn: String, table: &'static str| async move {
        let c = connect(&dsn).await.ok()?;
        let row = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .ok()?;
        Some(row.get::<_, i64>(0))
    };
    let read = stack.leader.dsn("catalog_read");
    [
        count(read.clone(), "processed_events").await,
        count(read, "walcast_tombstones").await,
        count(stack.write_dsn(), "idempotency_keys").await,
    ]
}

pub fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

/// The broker JVM: the process whose command line names this broker's server.properties.
fn kafka_pid(stack: &Stack) -> Option<u32> {
    let props = stack.kafka.log_file().parent()?.join("server.properties");
    let props = props.to_str()?.to_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("kafka.Kafka") && cmd.contains(props.as_str())).then_some(pid)
    })
}

/// CPU seconds (user + system) used so far by each part of the running system: the source,
/// the sink, the broker JVM, the leader's and the replicas' Postgres processes (postmaster and
/// its children) and this process (the load generator). Clock ticks are read from
/// `/proc/<pid>/stat`, at the usual 100 per second.
pub fn cpu_seconds(stack: &Stack) -> Vec<(&'static str, f64)> {
    let postmaster = |pg: &walcast_testkit::Postgres| -> Option<u32> {
        let text = std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    };
    let mut parts: Vec<(&'static str, Vec<u32>)> = vec![
        ("source", stack.source.pid().into_iter().collect()),
        ("sink", stack.sink.pid().into_iter().collect()),
        ("Kafka", kafka_pid(stack).into_iter().collect()),
        ("leader PG", postmaster(&stack.leader).into_iter().collect()),
        (
            "replica PG",
            stack.replicas.iter().filter_map(postmaster).collect(),
        ),
        ("loader", vec![std::process::id()]),
    ];
    if let Some(app) = stack.app.as_ref().and_then(|a| a.pid()) {
        parts.push(("app", vec![app]));
    }
    // Every process's parent, to add the Postgres backends to their postmaster.
    let stats: Vec<(u32, u32, f64)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let (ppid, secs) = proc_stat(pid)?;
                    Some((pid, ppid, secs))
                })
                .collect()
        })
        .unwrap_or_default();
    parts
        .into_iter()
        .map(|(name, roots)| {
            let secs = stats
                .iter()
                .filter(|(pid, ppid, _)| {
                    roots.contains(pid) || (name.ends_with("PG") && roots.contains(ppid))
                })
                .map(|s| s.2)
                .sum();
            (name, secs)
        })
        .collect()
}

/// (parent pid, user + system CPU seconds) of `pid`.
fn proc_stat(pid: u32) -> Option<(u32, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Children already reaped (Postgres backends that ended) count for their parent.
    let cutime: f64 = fields.get(13)?.parse().ok()?;
    let cstime: f64 = fields.get(14)?.parse().ok()?;
    Some((ppid, (utime + stime + cutime + cstime) / 100.0))
}

/// The `_sum` and `_count` of histogram `name` on an admin port, added over all labels.
pub fn histogram_totals(port: u16, name: &str) -> (f64, f64) {
    let Ok((200, text)) = super::http(port, "GET", "/metrics", None) else {
        return (0.0, 0.0);
    };
    let total = |suffix: &str| -> f64 {
        let series = format!("{name}{suffix}");
        text.lines()
            .filter(|l| {
                l.strip_prefix(series.as_str())
                    .is_some_and(|r| r.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (total("_sum"), total("_count"))
}
