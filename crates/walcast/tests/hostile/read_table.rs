//! A read table changed under a running sink.

use std::time::Duration;

use walcast_testkit::{unique_name, wait_until};

use crate::support::free_port;
use crate::support::pipeline::*;

#[test]
fn read_table_changed_under_a_running_sink_is_named_and_caught_up_after_the_fix() {
    let topic = unique_name("hostile_schema");
    create_topic(&topic, 1);
    let (a, b) = (Db::new("hostile_schema_a"), Db::new("hostile_schema_b"));
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let cfg = sink_config(
        dir.path(),
        &topic,
        &[("catalog_read", a.dsn()), ("replica-1", b.dsn())],
        admin,
    );
    let mut sink = spawn("sink", &["sink", "--config", path_str(&cfg)]);
    produce(&topic, &product_events(1..6, |n| format!("p{n}")));
    a.wait_offsets(5, Duration::from_secs(90), &sink);
    b.wait_offsets(5, Duration::from_secs(90), &sink);

    // A column the projection writes disappears on replica-1.
    b.psql("ALTER TABLE catalog_product_read DROP COLUMN search_text");
    produce(&topic, &product_events(6..11, |n| format!("p{n}")));
    a.wait_offsets(10, Duration::from_secs(60), &sink);
    sink.expect_log("column \"search_text\"", Duration::from_secs(60));
    let named = wait_until(
        "the target named down on /ready",
        Duration::from_secs(30),
        || {
            let (ready, up) = target_state(admin, "replica-1");
            ready.contains("replica-1: ") && ready.contains("search_text") && up == Some(0.0)
        },
    )
    .is_ok();
    assert!(
        named,
        "{:?}\n{}",
        target_state(admin, "replica-1"),
        sink.log()
    );
    assert!(
        sink.log().contains("catalog_product_read"),
        "{}",
        sink.log()
    );
    assert_eq!(
        b.stored_offsets(),
        5,
        "replica-1 stops at the first refused batch"
    );
    assert_eq!(target_state(admin, "catalog_read").1, Some(1.0));

    // Restored: replica-1 catches up with nothing lost. The five rows that existed lost
    // their search_text with the dropped column (the operator's DROP did that, not walcast);
    // every row written after the fix is complete.
    b.psql("ALTER TABLE catalog_product_read ADD COLUMN search_text TEXT");
    b.wait_offsets(10, Duration::from_secs(60), &sink);
    assert_eq!(b.psql("SELECT count(*) FROM catalog_product_read"), "10");
    let since_fix = |db: &Db| {
        db.rows()
            .lines()
            .filter(|l| !l.contains("|∅|"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(since_fix(&b).len(), 5, "{}", b.rows());
    assert!(since_fix(&b).iter().all(|r| a.rows().contains(r.as_str())));
    b.psql(
        "UPDATE catalog_product_read SET search_text = lower(concat_ws(' ', sku, name, \
         description)) WHERE search_text IS NULL",
    );
    assert_eq!(a.rows(), b.rows());

    // A type the values no longer fit: the refused events are dead-lettered by replica-1
    // only, the others applied; after the type is restored later events apply again.
    b.psql("ALTER TABLE catalog_product_read ALTER COLUMN name TYPE varchar(8)");
    let mut batch = product_events(11..13, |n| format!("p{n}"));
    batch.extend(product_events(13..14, |_| {
        "a name longer than eight".into()
    }));
    batch.extend(product_events(14..16, |n| format!("p{n}")));
    produce(&topic, &batch);
    a.wait_offsets(15, Duration::from_secs(60), &sink);
    b.wait_offsets(15, Duration::from_secs(60), &sink);
    let dead = read_topic(&format!("{topic}.dlq"), Duration::from_secs(60), |rs| {
        !rs.is_empty()
    });
    assert_eq!(dead.len(), 1, "{}", summary(&dead));
    let d = &dead[0];
    assert_eq!(d.header("id"), eid(13));
    assert_eq!(d.header("walcast.target"), "replica-1");
    assert_eq!(d.header("walcast.error.kind"), "database");
    assert!(
        d.header("walcast.error").contains("character varying(8)"),
        "{d:?}"
    );
    assert_eq!(d.header("walcast.original.offset"), "12");
    assert_eq!(a.psql("SELECT count(*) FROM catalog_product_read"), "15");
    assert_eq!(b.psql("SELECT count(*) FROM catalog_product_read"), "14");
    b.psql("ALTER TABLE catalog_product_read ALTER COLUMN name TYPE text");
    produce(
        &topic,
        &product_events(16..17, |_| "long names fit again".into()),
    );
    b.wait_offsets(16, Duration::from_secs(60), &sink);
    assert_eq!(b.psql("SELECT count(*) FROM catalog_product_read"), "15");
    assert!(sink.is_running(), "{}", sink.log());
    assert!(sink.stop(), "{}", sink.log());
}
