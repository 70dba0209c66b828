//! The slot or the publication dropped under a running source.

use std::time::Duration;

use walcast_testkit::Service;
use walcast_testkit::wait_until;

use crate::support::pipeline::*;

/// Terminates the slot's walsender and drops the slot, retrying while the source reconnects.
fn drop_slot_under_source(db: &Db, slot: &str) {
    let dropped = wait_until("the slot dropped", Duration::from_secs(30), || {
        pg().psql(
            &db.name,
            &format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
            ),
        )
        .is_ok()
            && pg()
                .psql(
                    &db.name,
                    &format!("SELECT pg_drop_replication_slot('{slot}')"),
                )
                .is_ok()
    })
    .is_ok();
    assert!(dropped, "could not drop slot {slot}");
}

fn simple_event(n: u32) -> (String, String, &'static str, String) {
    product_events(n..n + 1, |n| format!("p{n}")).remove(0)
}

fn write_events(db: &Db, range: std::ops::Range<u32>) {
    for (id, agg, ty, payload) in range.map(simple_event) {
        db.insert_outbox(&id, &agg, ty, &payload);
    }
}

fn wait_ids(topic: &str, range: std::ops::Range<u32>) -> Vec<Rec> {
    let want: Vec<String> = range.map(eid).collect();
    read_topic(topic, Duration::from_secs(90), |rs| {
        want.iter().all(|w| rs.iter().any(|r| r.header("id") == w))
    })
}

/// A source streaming from a prepared write database (`create` as given) that has published
/// events 1 to 3: the database, its names, the directory holding the connector file, the
/// file, and the source.
fn streaming_three_events(
    prefix: &str,
    create: bool,
) -> (Db, Names, tempfile::TempDir, std::path::PathBuf, Service) {
    let (db, names) = prepared_write_db(prefix);
    let dir = tempfile::tempdir().unwrap();
    let cfg = source_config(
        dir.path(),
        &db,
        &names,
        &[(&["postgres", "create"], create.into())],
    );
    let source = streaming_source(&cfg);
    write_events(&db, 1..4);
    wait_ids(&names.topic, 1..4);
    (db, names, dir, cfg, source)
}

#[test]
fn slot_dropped_under_a_running_source_with_create_false_stops_with_the_fix() {
    let (db, names, _dir, _cfg, mut source) = streaming_three_events("hostile_slot", false);
    // Confirmed past the three events before the slot goes.
    let last = db.psql("SELECT pg_current_wal_lsn()");
    let confirmed = wait_until(
        "the slot confirmed past the events",
        Duration::from_secs(30),
        || {
            db.psql(&format!(
                "SELECT coalesce(confirmed_flush_lsn >= '{last}', false) FROM pg_replication_slots \
             WHERE slot_name = '{}'",
                names.slot
            )) == "t"
        },
    )
    .is_ok();
    assert!(confirmed);
    drop_slot_under_source(&db, &names.slot);
    let status = source.exited(Duration::from_secs(60));
    let log = source.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "replication slot \"{}\" does not exist",
            names.slot
        )),
        "{log}"
    );
    assert!(
        log.contains("pg_create_logical_replication_slot"),
        "the fix: {log}"
    );
    // Nothing committed before the drop is lost.
    let got = wait_ids(&names.topic, 1..4);
    assert_eq!(got.len(), 3, "{}", summary(&got));
}

#[test]
fn slot_dropped_under_a_running_source_with_create_true_is_created_again() {
    let (db, names, _dir, _cfg, mut source) = streaming_three_events("hostile_slot_create", true);
    drop_slot_under_source(&db, &names.slot);
    // Creating a logical slot waits for every transaction open in the cluster to end; other
    // tests share this cluster and may hold long ones.
    source.expect_log("replication slot created", Duration::from_secs(180));
    let recreated = wait_until(
        "the slot created again and active",
        Duration::from_secs(30),
        || {
            db.psql(&format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active",
                names.slot
            )) == "1"
        },
    )
    .is_ok();
    assert!(recreated, "{}", source.log());
    // After the new slot exists, events flow again; the ones before the drop are there.
    write_events(&db, 4..6);
    let got = wait_ids(&names.topic, 1..6);
    assert!(got.len() >= 5, "{}", summary(&got));
    assert!(source.is_running(), "{}", source.log());
    assert!(source.stop(), "{}", source.log());
    db.psql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        names.slot
    ));
}

/// The walsender's error when the publication is gone, with the way out.
fn assert_publication_dropped(log: &str, names: &Names) {
    assert!(
        log.contains(&format!(
            "publication \"{}\" does not exist at the slot's position",
            names.publication
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("pg_replication_slot_advance('{}'", names.slot)),
        "the fix: {log}"
    );
}

/// Drops the publication under the running source and writes one more event: the source exits
/// with 1, naming the cause and the way out.
fn drop_publication_and_see_the_source_stop(db: &Db, names: &Names, source: &mut Service) {
    db.psql(&format!("DROP PUBLICATION {}", names.publication));
    write_events(db, 4..5);
    let status = source.exited(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", source.log());
    assert_publication_dropped(&source.log(), names);
}

#[test]
fn publication_dropped_under_a_running_source_is_named_with_the_way_out() {
    let (db, names, _dir, _cfg, mut source) = streaming_three_events("hostile_pub", false);
    drop_publication_and_see_the_source_stop(&db, &names, &mut source);
    let got = wait_ids(&names.topic, 1..4);
    assert_eq!(
        got.len(),
        3,
        "nothing before the drop is lost: {}",
        summary(&got)
    );
    db.psql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        names.slot
    ));
}

#[test]
fn publication_dropped_with_create_true_is_created_again_but_the_gap_needs_the_slot_moved() {
    let (db, names, _dir, cfg, mut source) = streaming_three_events("hostile_pub_create", true);
    drop_publication_and_see_the_source_stop(&db, &names, &mut source);

    // A restart creates the publication again, and still cannot decode the gap.
    let mut again = spawn("source", &["source", "--config", path_str(&cfg)]);
    let status = again.exited(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", again.log());
    assert!(
        again.log().contains("publication created"),
        "{}",
        again.log()
    );
    assert_publication_dropped(&again.log(), &names);

    // The way out the error names: move the slot past the gap, start again.
    db.psql(&format!(
        "SELECT pg_replication_slot_advance('{}', pg_current_wal_lsn())",
        names.slot
    ));
    let mut third = streaming_source(&cfg);
    write_events(&db, 5..6);
    let got = wait_ids(&names.topic, 5..6);
    assert!(
        got.iter().all(|r| r.header("id") != eid(4)),
        "the event written while the publication was missing is not streamed: {}",
        summary(&got)
    );
    assert_eq!(
        db.psql(&format!(
            "SELECT count(*) FROM outbox_messages WHERE id = '{}'",
            eid(4)
        )),
        "1",
        "it stays in the outbox table for the replay"
    );
    assert!(third.stop(), "{}", third.log());
    db.psql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        names.slot
    ));
}
