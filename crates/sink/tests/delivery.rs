//! Every event applied once on all four targets, whatever the broker redelivers.

use std::time::Duration;

use walcast_sink::metrics;

use crate::support::model::{Catalog, Event};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_applied_once_on_all_four_targets_despite_duplicates_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let topic = fresh_topic(3).await;
    let targets = fresh_targets();
    let config = load(&write_config(dir.path(), &topic, &targets, 200));
    let sink = Running::start(config).await;

    let mut catalog = Catalog::new(7);
    let events: Vec<Event> = (0..1500).map(|_| catalog.change()).collect();
    // Every 7th event is delivered twice in a row (a producer retry), and at the end the first
    // 300 events are replayed at new offsets with their ids unchanged (a source re-sending its
    // unacknowledged tail).
    let mut stream = Vec::new();
    for (i, e) in events.iter().enumerate() {
        stream.push(e.clone());
        if i % 7 == 0 {
            stream.push(e.clone());
        }
    }
    stream.extend(events[..300].iter().cloned());
    let duplicates = (stream.len() - events.len()) as f64;
    let mut lsn = 0;
    let (first, rest) = stream.split_at(stream.len() / 2);
    produce(&topic, first, &mut lsn).await;
    produce(&topic, rest, &mut lsn).await;

    wait_caught_up(
        targets.values(),
        stream.len() as i64,
        Duration::from_secs(120),
    )
    .await;
    let expected = catalog.expected();
    assert!(
        expected.len() > 50,
        "the model keeps most products: {}",
        expected.len()
    );
    for (name, dsn) in &targets {
        assert_rows(name, dsn, &expected).await;
        assert_eq!(
            count(dsn, "SELECT count(*) FROM processed_events").await,
            events.len() as i64,
            "{name}: each event processed once"
        );
        // Recorded once every partition is known consumed to its end (`applied` module docs):
        // shortly after the offsets.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let applied_lsn = count(
                dsn,
                "SELECT (commit_lsn - '0/0')::bigint FROM walcast_applied_lsn",
            )
            .await;
            if applied_lsn as u64 == lsn {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: applied LSN {applied_lsn:X}, the last commit is {lsn:X}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        assert_eq!(
            sink.metric(metrics::EVENTS_APPLIED, name),
            events.len() as f64,
            "{name}"
        );
        assert_eq!(
            sink.metric(metrics::EVENTS_DUPLICATE, name),
            duplicates,
            "{name}"
        );
        assert_eq!(sink.metric(metrics::DLQ, name), 0.0, "{name}");
        assert_eq!(
            sink.metric(metrics::APPLIED_COMMIT_LSN, name),
            lsn as f64,
            "{name}"
        );
        assert_eq!(sink.metric(metrics::TARGET_UP, name), 1.0, "{name}");
    }
    // The lag gauge follows the high watermarks every 2 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while TARGETS.iter().any(|t| sink.metric(metrics::LAG, t) != 0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag did not reach 0:\n{}",
            sink.registry.render()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (status, body) = http_get(sink.admin, "/ready").await;
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains("all 4 targets consuming"), "{body}");
    let (_, text) = http_get(sink.admin, "/metrics").await;
    for t in TARGETS {
        for m in [
            metrics::EVENTS_APPLIED,
            metrics::LAG,
            metrics::DLQ,
            metrics::APPLIED_COMMIT_LSN,
        ] {
            assert!(
                text.contains(&format!("{m}{{target=\"{t}\"}}")),
                "{m} of {t} in /metrics"
            );
        }
        assert!(
            text.contains(&format!(
                "{}_count{{target=\"{t}\"}}",
                metrics::APPLY_SECONDS
            )),
            "{text}"
        );
    }
    sink.stop().await;
}
