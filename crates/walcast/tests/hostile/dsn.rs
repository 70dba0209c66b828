//! Bad DSNs and wrong passwords: named with the cause and the fix.

use std::time::Duration;

use walcast_testkit::{unique_name, wait_until};

use crate::support::free_port;
use crate::support::pipeline::*;

#[test]
fn source_with_a_bad_dsn_names_the_cause_and_the_fix() {
    let (db, names) = prepared_write_db("hostile_dsn");
    let dir = tempfile::tempdir().unwrap();
    let port = pg().port();
    let norepl = unique_name("norepl");
    pg().psql("postgres", &format!("CREATE ROLE {norepl} LOGIN"))
        .unwrap();
    db.psql(&format!("GRANT SELECT ON outbox_messages TO {norepl}"));
    let closed = free_port();

    // Operator errors: the source exits 1 with the cause and the fix.
    for (case, dsn, needles) in [
        (
            "wrong password",
            format!(
                "host=127.0.0.1 port={port} user={PW_ROLE} password=wrong-secret dbname={}",
                db.name
            ),
            vec![
                "password authentication failed",
                PW_ROLE,
                "fix user and password in the dsn",
            ],
        ),
        (
            "no REPLICATION attribute",
            format!(
                "host=127.0.0.1 port={port} user={norepl} dbname={}",
                db.name
            ),
            vec![
                "lacks the REPLICATION attribute",
                &*format!("ALTER ROLE \"{norepl}\" WITH REPLICATION"),
            ],
        ),
    ] {
        let cfg = source_config_dsn(dir.path(), &dsn, &names, &[]);
        let mut source = spawn("source", &["source", "--config", path_str(&cfg)]);
        let status = source.exited(Duration::from_secs(60));
        let log = source.log();
        assert_eq!(status.code(), Some(1), "{case}: {log}");
        for n in &needles {
            assert!(log.contains(n), "{case}: no {n:?} in\n{log}");
        }
        assert!(
            !log.contains("wrong-secret"),
            "{case}: the password is masked: {log}"
        );
    }

    // Network errors may clear by themselves: the source keeps retrying and says why.
    for (case, dsn, needles) in [
        (
            "unresolvable host",
            format!(
                "host=walcast-no-such-host.invalid port=5432 user=postgres dbname={}",
                db.name
            ),
            vec![
                "walcast-no-such-host.invalid:5432",
                "failed to lookup address",
                "check host and port in the dsn",
            ],
        ),
        (
            "closed port",
            format!(
                "host=127.0.0.1 port={closed} user=postgres dbname={}",
                db.name
            ),
            vec![
                &*format!("127.0.0.1:{closed}"),
                "Connection refused",
                "check host and port in the dsn",
            ],
        ),
    ] {
        let cfg = source_config_dsn(dir.path(), &dsn, &names, &[]);
        let mut source = spawn("source", &["source", "--config", path_str(&cfg)]);
        source.expect_log("starting over", Duration::from_secs(30));
        let reported = wait_until(
            "the cause and the fix in the log",
            Duration::from_secs(30),
            || {
                let log = source.log();
                needles.iter().all(|n| log.contains(n))
            },
        )
        .is_ok();
        assert!(reported, "{case}: {needles:?} not all in\n{}", source.log());
        assert!(source.is_running(), "{case}: retries instead of exiting");
        source.stop();
    }
    db.psql(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        names.slot
    ));
}

#[test]
fn sink_target_with_a_wrong_password_is_named_while_the_others_flow() {
    let topic = unique_name("hostile_pw");
    create_topic(&topic, 1);
    let good = Db::new("hostile_pw_good");
    let bad = Db::new("hostile_pw_bad");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let bad_dsn = format!(
        "host=127.0.0.1 port={} user={PW_ROLE} password=wrong-secret dbname={}",
        pg().port(),
        bad.name
    );
    let cfg = sink_config(
        dir.path(),
        &topic,
        &[("catalog_read", good.dsn()), ("replica-1", bad_dsn)],
        admin,
    );
    let mut sink = spawn("sink", &["sink", "--config", path_str(&cfg)]);
    produce(&topic, &product_events(1..21, |n| format!("product {n}")));
    good.wait_offsets(20, Duration::from_secs(90), &sink);
    assert_eq!(good.psql("SELECT count(*) FROM catalog_product_read"), "20");

    sink.expect_log("password authentication failed", Duration::from_secs(30));
    let log = sink.log();
    assert!(log.contains("replica-1"), "{log}");
    assert!(
        log.contains("fix user/password in the target's dsn"),
        "{log}"
    );
    assert!(
        !log.contains("wrong-secret"),
        "the password is masked: {log}"
    );
    let named = wait_until(
        "the target named down on /ready",
        Duration::from_secs(30),
        || {
            let (ready, up) = target_state(admin, "replica-1");
            ready.contains("replica-1: ")
                && ready.contains("password authentication failed")
                && up == Some(0.0)
        },
    )
    .is_ok();
    assert!(named, "{:?}", target_state(admin, "replica-1"));
    assert_eq!(target_state(admin, "catalog_read").1, Some(1.0));
    assert!(sink.is_running(), "the sink keeps running:\n{}", sink.log());
    assert!(sink.stop(), "{}", sink.log());
}
