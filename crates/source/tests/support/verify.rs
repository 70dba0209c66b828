//! Checks every record against the outbox rows in the database.

use std::collections::{BTreeMap, HashMap};

use walcast_pgoutput::value::{pg_type, text_to_json};
use walcast_pgoutput::{Lsn, Timestamp};
use walcast_source::record;

use super::OutboxRow;
use super::kafka::{Received, java_partition};

/// What the checks found.
#[derive(Debug, Default)]
pub struct Report {
    /// Records whose id was seen before.
    pub duplicates: usize,
    /// Highest `walcast.commit_lsn`.
    pub max_commit_lsn: Lsn,
}

/// Every row arrived, each record matches its row (key, value text, headers, timestamp,
/// partition by the Java partitioner) and each aggregate's events are in commit order
/// (`seq` 0, 1, 2, ... in offset order, first copies only).
pub fn check(records: &[Received], rows: &[OutboxRow], partitions: i32) -> Report {
    let by_id: HashMap<&str, &OutboxRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut report = Report::default();
    let mut ordered: Vec<&Received> = records.iter().collect();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    let mut per_aggregate: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    for r in &ordered {
        let id = r.id();
        let Some(row) = by_id.get(id) else {
            panic!("record with unknown id {id:?}: {r:?}");
        };
        let copies = seen.entry(id).or_default();
        *copies += 1;
        if *copies > 1 {
            report.duplicates += 1;
            continue;
        }
        check_record(r, row, partitions);
        let commit_lsn: Lsn = r
            .header(record::COMMIT_LSN)
            .and_then(|s| s.parse().ok())
            .unwrap_or(Lsn::ZERO);
        report.max_commit_lsn = report.max_commit_lsn.max(commit_lsn);
        let payload: serde_json::Value = serde_json::from_str(r.value_text()).unwrap_or_default();
        let seq = payload["seq"].as_u64().unwrap_or(u64::MAX);
        per_aggregate
            .entry(r.key.clone().unwrap_or_default())
            .or_default()
            .push((r.partition, seq));
    }
    let missing: Vec<&str> = rows
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never arrived, e.g. {:?}",
        missing.len(),
        rows.len(),
        &missing[..missing.len().min(5)]
    );
    for (aggregate, events) in per_aggregate {
        let partitions: std::collections::HashSet<i32> = events.iter().map(|e| e.0).collect();
        assert_eq!(
            partitions.len(),
            1,
            "aggregate {aggregate} spread over partitions {partitions:?}"
        );
        let seqs: Vec<u64> = events.iter().map(|e| e.1).collect();
        let expected: Vec<u64> = (0..seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "aggregate {aggregate} out of commit order");
    }
    report
}

fn check_record(r: &Received, row: &OutboxRow, partitions: i32) {
    let ctx = || format!("record {}:{} id {}", r.partition, r.offset, row.id);
    assert_eq!(
        r.key.as_deref(),
        row.aggregate_id.as_deref(),
        "{}: key",
        ctx()
    );
    assert_eq!(
        Some(r.value_text()),
        row.payload.as_deref(),
        "{}: value must be the payload text",
        ctx()
    );
    assert_eq!(
        r.header(record::EVENT_TYPE),
        row.event_type.as_deref(),
        "{}: event_type",
        ctx()
    );
    assert_eq!(
        r.header("correlation_id"),
        row.correlation_id.as_deref(),
        "{}: correlation_id",
        ctx()
    );
    let occurred = row
        .occurred_at
        .as_deref()
        .and_then(|t| text_to_json(pg_type::TIMESTAMPTZ, t).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    assert_eq!(
        r.header(record::OCCURRED_AT),
        occurred.as_deref(),
        "{}: occurred_at",
        ctx()
    );
    let lsn: Option<Lsn> = r.header(record::LSN).and_then(|s| s.parse().ok());
    let commit_lsn: Option<Lsn> = r.header(record::COMMIT_LSN).and_then(|s| s.parse().ok());
    assert!(
        lsn.is_some() && commit_lsn.is_some() && lsn < commit_lsn,
        "{}: walcast.lsn / commit_lsn {:?}",
        ctx(),
        r.headers
    );
    assert!(
        r.header(record::XID)
            .is_some_and(|x| x.parse::<u32>().is_ok()),
        "{}: xid",
        ctx()
    );
    let commit_ms = r
        .header(record::COMMIT_TS)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(Timestamp::unix_millis);
    assert!(
        commit_ms.is_some(),
        "{}: commit_ts {:?}",
        ctx(),
        r.header(record::COMMIT_TS)
    );
    assert_eq!(
        r.timestamp,
        commit_ms,
        "{}: record timestamp = commit time",
        ctx()
    );
    let key = r.key.as_deref().unwrap_or_default().as_bytes();
    assert_eq!(
        r.partition,
        java_partition(key, partitions),
        "{}: partition differs from the Java client's",
        ctx()
    );
}
