//! `walcast source replay`: outbox rows the stream never carried (written while the source
//! was stopped, then skipped by moving the slot past them) are published again, the target
//! ends equal to the write DB, and nothing is applied twice; a replay older than the sink's
//! tombstone window is refused, naming the rebuild.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use walcast_testkit::{ConnectorFile, wait_until};

use crate::support::pipeline::*;
use crate::support::{WALCAST, free_port};

/// The write model, one line per product, in key order.
const WRITE_ROWS: &str = "SELECT coalesce(string_agg(concat_ws('|', id, sku, name, price, \
     is_active, version), E'\\n' ORDER BY id), '') FROM products";
/// The read model in the same layout.
const READ_ROWS: &str = "SELECT coalesce(string_agg(concat_ws('|', product_id, sku, name, price, \
     is_active, version), E'\\n' ORDER BY product_id), '') FROM catalog_product_read";
/// Every read row's physical version: a rewritten row gets a new xmin.
const READ_XMINS: &str = "SELECT coalesce(string_agg(product_id || ':' || xmin, ',' ORDER BY \
     product_id), '') FROM catalog_product_read";

/// The catalog's write of a new product: the row and its outbox event in one transaction.
fn create(db: &Db, n: u32) {
    db.psql(&format!(
        "WITH p AS (INSERT INTO products (id, sku, name, price, currency, is_active, version) \
         VALUES ('{}', 'SKU-{n}', 'Product {n}', 10.00, 'EUR', true, 1) RETURNING *) \
         INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
         SELECT gen_random_uuid(), p.id, 'ProductCreated', now(), jsonb_build_object('productId', \
         p.id, 'sku', p.sku, 'name', p.name, 'description', p.description, 'price', \
         p.price::text, 'currency', p.currency, 'isActive', p.is_active, 'version', p.version) \
         FROM p",
        pid(n)
    ));
}

fn change_price(db: &Db, n: u32, price: &str) {
    db.psql(&format!(
        "WITH p AS (UPDATE products SET price = {price}, version = version + 1, \
         updated_at = now() WHERE id = '{}' RETURNING *) \
         INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
         SELECT gen_random_uuid(), p.id, 'ProductPriceChanged', now(), jsonb_build_object( \
         'productId', p.id, 'price', p.price::text, 'currency', p.currency, 'version', p.version) \
         FROM p",
        pid(n)
    ));
}

fn delete(db: &Db, n: u32) {
    db.psql(&format!(
        "WITH p AS (DELETE FROM products WHERE id = '{}' RETURNING id, version) \
         INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
         SELECT gen_random_uuid(), p.id, 'ProductDeleted', now(), jsonb_build_object( \
         'productId', p.id, 'version', p.version + 1) FROM p",
        pid(n)
    ));
}

/// Events applied to the target (0 before the sink created its tables).
fn processed(read: &Db) -> i64 {
    pg().psql(&read.name, "SELECT count(*) FROM processed_events")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn wait_processed(read: &Db, n: i64, sink: &walcast_testkit::Service) {
    let done = wait_until("events applied", Duration::from_secs(90), || {
        processed(read) >= n
    });
    assert!(
        done.is_ok(),
        "{} of {n} events applied\nsink log:\n{}",
        processed(read),
        sink.log()
    );
}

/// The write DB's clock as RFC 3339 UTC with microseconds.
fn now_rfc3339(db: &Db) -> String {
    db.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

/// `walcast source replay ARGS`: (success, stdout, stderr).
fn replay(source: &Path, sink: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(WALCAST)
        .args(["source", "replay", "--config", path_str(source)])
        .args(["--sink-config", path_str(sink)])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run walcast");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replay_since_restores_a_target_that_missed_events_and_applies_nothing_twice() {
    let write = Db::new("replay_write");
    write.psql(WRITE_SQL);
    let read = Db::new("replay_read");
    let names = Names::for_db(&write);
    let dir = tempfile::tempdir().unwrap();
    let source_cfg = source_config(
        dir.path(),
        &write,
        &names,
        &[(&["snapshot", "initial"], false.into())],
    );
    let admin = free_port();
    let sink_cfg = sink_config(
        dir.path(),
        &names.topic,
        &[("catalog_read", read.dsn())],
        admin,
    );
    let mut source = streaming_source(&source_cfg);
    let mut sink = spawn("sink", &["sink", "--config", path_str(&sink_cfg)]);
    for n in 1..4 {
        create(&write, n);
    }
    wait_processed(&read, 3, &sink);

    // The gap: events written while the source is down, then skipped by moving the slot past
    // them (what an operator does after a dropped publication or an invalidated slot).
    let since = now_rfc3339(&write);
    assert!(source.stop(), "{}", source.log());
    create(&write, 4);
    create(&write, 5);
    change_price(&write, 1, "12.50");
    delete(&write, 2);
    change_price(&write, 4, "7.25");
    // A row the router cannot publish (larger than max_message_bytes): a dead letter, as live.
    write.psql(&format!(
        "INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
         VALUES ('{}', '{}', 'ProductNoted', now(), jsonb_build_object('note', \
         repeat('x', 1100000)))",
        eid(9),
        pid(9)
    ));
    write.psql(&format!(
        "SELECT pg_replication_slot_advance('{}', pg_current_wal_lsn())",
        names.slot
    ));
    let mut source = streaming_source(&source_cfg);
    create(&write, 6);
    wait_processed(&read, 4, &sink);
    let truth = write.psql(WRITE_ROWS);
    assert_ne!(read.psql(READ_ROWS), truth, "the target missed the gap");
    assert_eq!(
        read.psql("SELECT count(*) FROM catalog_product_read"),
        "4",
        "products 1, 2, 3 and 6"
    );
    let live_xmins = read.psql(READ_XMINS);

    // Pages of two rows: product 4's two events may fall on two pages, and stay in order.
    let (ok, out, err) = replay(
        &source_cfg,
        &sink_cfg,
        &["--since", &since, "--page-rows", "2"],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "replayed 7 outbox rows in 4 pages: published 6 events ({topic} 6), 1 dead \
             letters ({topic}.dlq 1)",
            topic = names.topic
        )),
        "{out}\n{err}"
    );
    wait_processed(&read, 9, &sink);
    let converged = wait_until(
        "the target equal to the write DB",
        Duration::from_secs(60),
        || read.psql(READ_ROWS) == truth,
    );
    assert!(
        converged.is_ok(),
        "write:\n{truth}\nread:\n{}\nsink log:\n{}",
        read.psql(READ_ROWS),
        sink.log()
    );
    assert_eq!(
        read.psql("SELECT count(*) FROM walcast_tombstones"),
        "1",
        "product 2's delete left its tombstone"
    );
    // Product 3 (before the window) and 6 (applied live, replayed) were not written again.
    let unchanged = |xmins: &str, n: u32| {
        let entry = |s: &str| {
            s.split(',')
                .find(|e| e.starts_with(&pid(n)))
                .map(str::to_owned)
        };
        assert_eq!(entry(xmins), entry(&read.psql(READ_XMINS)), "product {n}");
    };
    unchanged(&live_xmins, 3);
    unchanged(&live_xmins, 6);

    // The replayed records are the live ones, ids included, marked and without a WAL position.
    let is_replay = |r: &Rec| r.header("walcast.replay") == "true";
    let records = read_topic(&names.topic, Duration::from_secs(30), |rs| {
        rs.iter().filter(|r| is_replay(r)).count() >= 6
    });
    let key_6 = Some(pid(6));
    let live_6 = records
        .iter()
        .find(|r| r.key == key_6 && !is_replay(r))
        .expect("product 6's live event");
    let replayed_6 = records
        .iter()
        .find(|r| r.key == key_6 && is_replay(r))
        .expect("product 6's event replayed");
    assert_eq!(replayed_6.value, live_6.value);
    for h in ["id", "event_type", "occurred_at"] {
        assert_eq!(replayed_6.header(h), live_6.header(h), "{h}");
    }
    assert!(!live_6.header("walcast.lsn").is_empty());
    let replayed: Vec<&Rec> = records.iter().filter(|r| is_replay(r)).collect();
    assert_eq!(replayed.len(), 6, "{}", summary(&records));
    assert!(
        replayed.iter().all(
            |r| r.header("walcast.lsn").is_empty() && r.header("walcast.commit_lsn").is_empty()
        )
    );
    // Per aggregate in version order: product 4 created, then its price changed.
    let of_4: Vec<&str> = replayed
        .iter()
        .filter(|r| r.key == Some(pid(4)))
        .map(|r| r.header("event_type"))
        .collect();
    assert_eq!(of_4, ["ProductCreated", "ProductPriceChanged"]);

    let dlq = read_topic(
        &format!("{}.dlq", names.topic),
        Duration::from_secs(30),
        |rs| !rs.is_empty(),
    );
    assert_eq!(dlq.len(), 1, "{}", summary(&dlq));
    assert_eq!(
        (
            dlq[0].header("id"),
            dlq[0].header("walcast.error.kind"),
            dlq[0].header("walcast.replay")
        ),
        (eid(9).as_str(), "payload_too_large", "true")
    );

    // A second replay publishes the same six events again and changes nothing; this time
    // each page is cut after its first row by the byte bound ([kafka] max_in_flight_bytes).
    let before = (read.psql(READ_XMINS), processed(&read));
    let mut tiny = ConnectorFile::parse(&std::fs::read_to_string(&source_cfg).unwrap()).unwrap();
    tiny.set(&["kafka", "max_in_flight_bytes"], 1);
    let tiny = tiny.write(&dir.path().join("tiny.source.toml")).unwrap();
    let (ok, out, err) = replay(&tiny, &sink_cfg, &["--since", &since]);
    assert!(
        ok && out.contains("replayed 7 outbox rows in 7 pages: published 6 events"),
        "{out}\n{err}"
    );
    read.wait_offsets(records.len() as i64 + 6, Duration::from_secs(60), &sink);
    assert_eq!((read.psql(READ_XMINS), processed(&read)), before);
    assert_eq!(read.psql(READ_ROWS), truth);

    assert!(sink.stop(), "{}", sink.log());
    assert!(source.stop(), "{}", source.log());
    write.psql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        names.slot
    ));
}

#[test]
fn a_replay_older_than_the_tombstone_window_is_refused_naming_the_rebuild() {
    let write = Db::new("replay_old");
    write.psql(WRITE_SQL);
    let names = Names::for_db(&write);
    write.psql(&format!(
        "INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) VALUES \
         ('{}', '{}', 'ProductCreated', now() - interval '40 days', '{{\"version\": 1}}'), \
         ('{}', '{}', 'ProductRenamed', now() - interval '5 minutes', '{{\"version\": 2}}')",
        eid(1),
        pid(1),
        eid(2),
        pid(1)
    ));
    let dir = tempfile::tempdir().unwrap();
    let source_cfg = source_config(dir.path(), &write, &names, &[]);
    let sink_cfg = sink_config(
        dir.path(),
        &names.topic,
        &[("catalog_read", write.dsn())],
        1,
    );

    // 40 days > the shipped 30-day window: refused before anything is produced.
    for args in [
        &["--since", "2026-01-01T00:00:00Z"][..],
        &["--aggregate", &pid(1)],
        &["--event-id", &eid(1)],
    ] {
        let (ok, out, err) = replay(&source_cfg, &sink_cfg, args);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            err.contains("tombstone window (2592000 s")
                && err.contains("walcast sink rebuild")
                && err.contains("occurred at"),
            "{args:?}: {err}"
        );
    }
    // Input Postgres cannot read is named, with the option.
    for (args, want) in [
        (
            ["--since", "not-a-time"],
            "timestamp with time zone: \"not-a-time\"",
        ),
        (["--event-id", "not-a-uuid"], "uuid: \"not-a-uuid\""),
    ] {
        let (ok, _, err) = replay(&source_cfg, &sink_cfg, &args);
        assert!(!ok && err.contains(want) && err.contains(args[0]), "{err}");
    }
    // Within the window: allowed (a dry run, nothing produced).
    let (ok, out, err) = replay(
        &source_cfg,
        &sink_cfg,
        &["--event-id", &eid(2), "--dry-run"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("would publish 1 events ({} 1)", names.topic)),
        "{out}"
    );
    // The window is the sink's: shortened to a minute, the 5-minute-old event is refused too.
    let mut short = ConnectorFile::parse(&std::fs::read_to_string(&sink_cfg).unwrap()).unwrap();
    short
        .set(&["prune", "tombstone_window_secs"], 60)
        .set(&["prune", "processed_events_window_secs"], 60);
    let short = short.write(&dir.path().join("short.sink.toml")).unwrap();
    let (ok, _, err) = replay(&source_cfg, &short, &["--event-id", &eid(2), "--dry-run"]);
    assert!(!ok && err.contains("tombstone window (60 s"), "{err}");
}
