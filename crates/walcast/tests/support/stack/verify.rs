//! The end state, checked against the write database: every target equals the `products`
//! projection row for row, `processed_events` holds every outbox event id, and the topic
//! holds every event (duplicates counted; the delivery rule allows them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{Stack, connect};

/// One row of the read model, as text, keyed by product id.
const WRITE_ROWS: &str = "SELECT id::text, concat_ws('|', sku, name, coalesce(description, '∅'), \
     price::text, currency, is_active::text, version::text) FROM products";
const READ_ROWS: &str = "SELECT product_id::text, concat_ws('|', sku, name, coalesce(description, '∅'), \
     price::text, currency, is_active::text, version::text) || \
     CASE WHEN search_text = lower(concat_ws(' ', sku, name, description)) THEN '' \
     ELSE '|search_text=' || search_text END FROM catalog_product_read";

#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// Outbox rows in the write database.
    pub events: usize,
    /// Events missing from the topic.
    pub lost_in_topic: usize,
    /// Records in the topic beyond one per event (allowed: the unacknowledged tail).
    pub topic_duplicates: usize,
    /// Per target: events missing from `processed_events`.
    pub lost: BTreeMap<String, usize>,
    /// Per target: product rows missing, extra or different.
    pub wrong_rows: BTreeMap<String, usize>,
    /// Problems that are not counts (a service died, a database was unreachable).
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn events_lost(&self) -> usize {
        self.lost_in_topic
            .max(self.lost.values().copied().max().unwrap_or(0))
    }

    pub fn rows_wrong(&self) -> usize {
        self.wrong_rows.values().sum()
    }

    pub fn ok(&self) -> bool {
        self.events_lost() == 0 && self.rows_wrong() == 0 && self.notes.is_empty()
    }
}

async fn strings(dsn: &str, sql: &str) -> Result<HashMap<String, String>, String> {
    let c = connect(dsn).await.map_err(|e| format!("{dsn}: {e}"))?;
    let rows = c.query(sql, &[]).await.map_err(|e| format!("{dsn}: {e}"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn ids(dsn: &str, sql: &str) -> Result<BTreeSet<uuid::Uuid>, String> {
    let c = connect(dsn).await.map_err(|e| format!("{dsn}: {e}"))?;
    let rows = c.query(sql, &[]).await.map_err(|e| format!("{dsn}: {e}"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn count(dsn: &str, sql: &str) -> Option<i64> {
    let c = connect(dsn).await.ok()?;
    c.query_one(sql, &[]).await.ok().map(|r| r.get(0))
}

/// Per target: product rows missing, extra or different, compared with the write database.
pub async fn wrong_rows(stack: &Stack) -> Result<BTreeMap<String, usize>, String> {
    let truth = strings(&stack.write_dsn(), WRITE_ROWS).await?;
    let mut out = BTreeMap::new();
    for (name, dsn) in stack.targets() {
        let rows = strings(&dsn, READ_ROWS).await?;
        let wrong = truth
            .iter()
            .filter(|(k, row)| rows.get(*k) != Some(row))
            .count()
            + rows.keys().filter(|k| !truth.contains_key(*k)).count();
        out.insert(name.to_owned(), wrong);
    }
    Ok(out)
}

/// Waits (up to `within`) until every target has processed as many events as the outbox
/// holds, then compares everything.
pub async fn converge(stack: &mut Stack, within: Duration) -> Verdict {
    converge_seen(stack, within, None).await
}

/// `processed_events` rows the sink has pruned on `target` (its metric; 0 without pruning).
fn pruned(stack: &Stack, target: &str) -> i64 {
    let Ok((200, text)) = super::http(stack.sink_admin, "GET", "/metrics", None) else {
        return 0;
    };
    let series = format!(
        "walcast_sink_bookkeeping_pruned_rows_total{{target=\"{target}\",table=\"processed_events\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as i64
}

/// [`converge`] under pruning: a target has caught up when its `processed_events` rows plus
/// the rows the sink pruned equal the outbox, and an event counts as processed when it is in
/// `processed_events` now or was `seen` there before it was pruned.
pub async fn converge_seen(
    stack: &mut Stack,
    within: Duration,
    seen: Option<&super::measure::Seen>,
) -> Verdict {
    let deadline = tokio::time::Instant::now() + within;
    let write = stack.write_dsn();
    let targets = stack.targets();
    loop {
        let outbox = count(&write, "SELECT count(*) FROM outbox_messages").await;
        let mut caught_up = outbox.is_some();
        for (name, dsn) in &targets {
            let done = count(dsn, "SELECT count(*) FROM processed_events")
                .await
                .map(|n| n + pruned(stack, name));
            if done != outbox {
                caught_up = false;
            }
        }
        if caught_up || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut v = Verdict::default();
    v.notes.extend(stack.dead_services());
    let outbox = match ids(&write, "SELECT id FROM outbox_messages").await {
        Ok(ids) => ids,
        Err(e) => {
            v.notes.push(format!("reading the outbox: {e}"));
            return v;
        }
    };
    v.events = outbox.len();
    let truth = match strings(&write, WRITE_ROWS).await {
        Ok(rows) => rows,
        Err(e) => {
            v.notes.push(format!("reading products: {e}"));
            return v;
        }
    };
    for (name, dsn) in &targets {
        match ids(dsn, "SELECT event_id FROM processed_events").await {
            Ok(mut done) => {
                done.extend(seen.into_iter().flat_map(|s| s.ids(name)).copied());
                v.lost
                    .insert((*name).to_owned(), outbox.difference(&done).count());
                let extra = done.difference(&outbox).count();
                if extra > 0 {
                    v.notes.push(format!(
                        "{name}: {extra} processed event ids that the outbox never held"
                    ));
                }
            }
            Err(e) => v.notes.push(format!("{name}: {e}")),
        }
        match strings(dsn, READ_ROWS).await {
            Ok(rows) => {
                let wrong = truth
                    .iter()
                    .filter(|(k, row)| rows.get(*k) != Some(row))
                    .count()
                    + rows.keys().filter(|k| !truth.contains_key(*k)).count();
                v.wrong_rows.insert((*name).to_owned(), wrong);
            }
            Err(e) => v.notes.push(format!("{name}: {e}")),
        }
    }
    let bootstrap = stack.kafka.bootstrap();
    let topic = stack.topic.clone();
    match tokio::task::spawn_blocking(move || topic_ids(&bootstrap, &topic)).await {
        Ok(Ok(records)) => {
            let distinct: BTreeSet<uuid::Uuid> = records.iter().copied().collect();
            v.lost_in_topic = outbox.difference(&distinct).count();
            v.topic_duplicates = records.len() - distinct.len();
        }
        Ok(Err(e)) => v.notes.push(format!("reading the topic: {e}")),
        Err(e) => v.notes.push(format!("reading the topic: {e}")),
    }
    v
}

/// The `id` header of every record in `topic`, from the start to the high watermarks.
pub fn topic_ids(bootstrap: &str, topic: &str) -> Result<Vec<uuid::Uuid>, String> {
    Ok(topic_headers(bootstrap, topic, &["id"])?
        .into_iter()
        .filter_map(|h| h[0].as_deref().and_then(|s| s.parse().ok()))
        .collect())
}

/// For every record in `topic` (from the start to the high watermarks), the text of the
/// headers `names`, in that order (`None` where a record lacks one).
pub fn topic_headers(
    bootstrap: &str,
    topic: &str,
    names: &[&str],
) -> Result<Vec<Vec<Option<String>>>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "walcast-e2e-verify")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(10);
    let meta = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = HashMap::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .map_err(|e| e.to_string())?;
        if high > low {
            tpl.add_partition_offset(topic, *p, Offset::Offset(low))
                .map_err(|e| e.to_string())?;
            remaining += high - low;
            ends.insert(*p, high);
        }
    }
    let mut out = Vec::with_capacity(remaining as usize);
    if remaining == 0 {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut left: HashMap<i32, i64> = ends;
    while !left.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(format!("the topic was not read to its end: {left:?} left"));
        }
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.map_err(|e| e.to_string())?;
        let mut values = vec![None; names.len()];
        if let Some(h) = m.headers() {
            for hdr in h.iter() {
                if let Some(i) = names.iter().position(|n| *n == hdr.key) {
                    values[i] = hdr
                        .value
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(str::to_owned);
                }
            }
        }
        out.push(values);
        if let Some(end) = left.get(&m.partition())
            && m.offset() + 1 >= *end
        {
            left.remove(&m.partition());
        }
    }
    Ok(out)
}
