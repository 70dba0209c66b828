//! Operator-facing errors, checked before streaming.

use walcast_postgres::Dsn;
use walcast_replication::{
    ChangeStream, Error, Lsn, Precondition, ReplicationConnection, StartOptions,
};
use walcast_testkit::Postgres;

use crate::support::{TestDb, ok, shared_pg};

async fn start_err(config: walcast_replication::ChangeStreamConfig) -> Error {
    match ChangeStream::start(config).await {
        Ok(_) => panic!("streaming started"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica_is_refused_with_the_fix() {
    let pg = ok(Postgres::builder().setting("wal_level", "replica").start());
    let db = TestDb::new(&pg, "wal_level");
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let e = start_err(db.stream_config(&["t"])).await;
    assert_eq!(
        e.to_string(),
        "wal_level is 'replica'; set wal_level = logical in postgresql.conf and restart Postgres"
    );
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_without_replication_is_refused() {
    let db = TestDb::new(shared_pg(), "norepl");
    let role = format!("{}_role", db.name);
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN NOREPLICATION; CREATE TABLE t (id int PRIMARY KEY);
         CREATE PUBLICATION {} FOR TABLE t; GRANT SELECT ON t TO {role};",
        db.publication
    ))
    .await;
    let mut config = db.stream_config(&["t"]);
    config.create = false;
    config.connect = ok(Dsn::parse(&format!(
        "host=127.0.0.1 port={} user={role} dbname={}",
        shared_pg().port(),
        db.name
    )));
    let e = start_err(config).await;
    assert!(
        matches!(
            &e,
            Error::Precondition(Precondition::MissingReplicationRole { .. })
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "role \"{role}\" lacks the REPLICATION attribute; run ALTER ROLE \"{role}\" WITH REPLICATION as a superuser (or connect as a role that has it)"
        )
    );
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_in_use_names_the_pid() {
    let db = TestDb::new(shared_pg(), "inuse");
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let first = ok(ChangeStream::start(db.stream_config(&["t"])).await);
    let pid = first.backend_pid().unwrap_or_default();
    let e = start_err(db.stream_config(&["t"])).await;
    assert!(
        e.to_string().starts_with(&format!(
            "replication slot \"{}\" is in use by another process (pid {pid}); stop the other consumer, or terminate it with SELECT pg_terminate_backend({pid})",
            db.slot
        )),
        "{e}"
    );
    assert!(e.is_retryable(), "the other consumer may go away");
    ok(first.close().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_missing_a_table() {
    let db = TestDb::new(shared_pg(), "pubmiss");
    db.exec(&format!(
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         CREATE PUBLICATION {} FOR TABLE a;",
        db.publication
    ))
    .await;
    let mut config = db.stream_config(&["a", "b"]);
    config.create = false;
    let e = start_err(config).await;
    assert_eq!(
        e.to_string(),
        format!(
            "publication \"{p}\" does not include table \"public\".\"b\"; run ALTER PUBLICATION \"{p}\" ADD TABLE \"public\".\"b\"",
            p = db.publication
        )
    );
    assert!(!e.is_retryable());

    let mut config = db.stream_config(&["a"]);
    config.create = false;
    config.publication = "nope".into();
    let e = start_err(config).await;
    assert!(e.to_string().starts_with(&format!(
        "publication \"nope\" does not exist in database \"{}\"; create it with CREATE PUBLICATION",
        db.name
    )), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_primary_key_or_replica_identity() {
    let db = TestDb::new(shared_pg(), "nopk");
    db.exec("CREATE TABLE logs (msg text)").await;
    let e = start_err(db.stream_config(&["logs"])).await;
    assert_eq!(
        e.to_string(),
        "table \"public\".\"logs\" has no primary key and REPLICA IDENTITY DEFAULT, so its UPDATEs and DELETEs cannot be replicated; add a primary key, or run ALTER TABLE \"public\".\"logs\" REPLICA IDENTITY FULL"
    );
    assert!(!e.is_retryable());
    // The fix works.
    db.exec("ALTER TABLE logs REPLICA IDENTITY FULL").await;
    let stream = ok(ChangeStream::start(db.stream_config(&["logs"])).await);
    ok(stream.close().await);
    db.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_slot_and_server_errors_keep_their_sqlstate() {
    let db = TestDb::new(shared_pg(), "noslot");
    db.exec(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION {} FOR TABLE t;",
        db.publication
    ))
    .await;
    let mut config = db.stream_config(&["t"]);
    config.create = false;
    let e = start_err(config).await;
    assert!(
        e.to_string().starts_with(&format!(
            "replication slot \"{}\" does not exist; create it",
            db.slot
        )),
        "{e}"
    );

    // Straight to the walsender: the ErrorResponse's SQLSTATE is kept.
    let conn = ok(ReplicationConnection::connect(&db.connect_config()).await);
    let e = match conn
        .start_replication(&db.slot, Lsn::ZERO, &StartOptions::new(&db.publication))
        .await
    {
        Ok(_) => panic!("started a missing slot"),
        Err(e) => e,
    };
    assert_eq!(e.sqlstate(), Some("42704"), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_commands_on_the_walsender() {
    let db = TestDb::new(shared_pg(), "cmds");
    let mut conn = ok(ReplicationConnection::connect(&db.connect_config()).await);
    assert_eq!(conn.server_major_version(), Some(15));
    let id = ok(conn.identify_system().await);
    assert_eq!(id.timeline, 1);
    assert_eq!(id.dbname.as_deref(), Some(db.name.as_str()));
    assert!(!id.system_id.is_empty() && id.xlogpos > Lsn::ZERO);
    let slot = ok(conn
        .create_replication_slot(&db.slot, walcast_replication::SnapshotAction::Export)
        .await);
    assert_eq!(slot.slot_name, db.slot);
    assert!(slot.consistent_point > Lsn::ZERO);
    assert!(slot.snapshot_name.is_some());
    assert_eq!(slot.output_plugin.as_deref(), Some("pgoutput"));
    let e = match conn
        .create_replication_slot(&db.slot, walcast_replication::SnapshotAction::Nothing)
        .await
    {
        Ok(_) => panic!("created the slot twice"),
        Err(e) => e,
    };
    assert_eq!(e.sqlstate(), Some("42710"), "{e}");
    // The connection is still usable after an error.
    ok(conn.identify_system().await);
    conn.close().await;
    db.drop_slot().await;
}
