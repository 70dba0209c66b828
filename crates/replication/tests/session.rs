//! Every connection forces DateStyle, IntervalStyle, TimeZone and extra_float_digits, whatever
//! the database, the role or the DSN set: values (pgoutput's included) are parsed as text.

use serde_json::json;
use walcast_postgres::{Dsn, connect_sql};
use walcast_replication::{ChangeStream, ReplicationConnection};

use crate::support::{TestDb, changes, collect_txns, json, ok, shared_pg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_are_forced_on_sql_and_replication_connections() {
    let db = TestDb::new(shared_pg(), "session");
    let name = &db.name;
    db.exec(&format!(
        "ALTER DATABASE {name} SET DateStyle = 'SQL, DMY';
         ALTER DATABASE {name} SET IntervalStyle = 'sql_standard';
         ALTER DATABASE {name} SET TimeZone = 'America/New_York';
         ALTER DATABASE {name} SET extra_float_digits = 0;
         CREATE TABLE t (id int PRIMARY KEY, tstz timestamptz, iv interval, f8 float8);"
    ))
    .await;
    // The DSN asks for another time zone too.
    let config = ok(Dsn::parse(&format!(
        "{} options='-c TimeZone=Asia/Tokyo'",
        db.dsn
    )));

    let client = ok(connect_sql(&config).await);
    // DateStyle=ISO fixes the output; the input order part is not ours to pick.
    let date_style = ok(client.query_one("SHOW DateStyle", &[]).await).get::<_, String>(0);
    assert!(date_style.starts_with("ISO, "), "DateStyle {date_style}");
    for (setting, want) in [
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        ("extra_float_digits", "3"),
    ] {
        let row = ok(client.query_one(&format!("SHOW {setting}"), &[]).await);
        assert_eq!(
            row.get::<_, String>(0),
            want,
            "{setting} on a SQL connection"
        );
    }
    let conn = ok(ReplicationConnection::connect(&config).await);
    assert_eq!(conn.parameter("DateStyle"), Some(date_style.as_str()));
    assert_eq!(conn.parameter("IntervalStyle"), Some("postgres"));
    assert_eq!(conn.parameter("TimeZone"), Some("UTC"));
    conn.close().await;

    // And what the walsender renders reads as it should.
    let mut sc = db.stream_config(&["t"]);
    sc.connect = config;
    let mut stream = ok(ChangeStream::start(sc).await);
    db.exec("INSERT INTO t VALUES (1, '2024-01-02 03:04:05+00', '1 day 02:00:00', 0.1)")
        .await;
    let events = collect_txns(&mut stream, 1).await;
    let row = json(changes(&events)[0])["new"].clone();
    assert_eq!(
        row,
        json!({"id": 1, "tstz": "2024-01-02T03:04:05+00:00", "iv": "1 day 02:00:00", "f8": 0.1})
    );
    ok(stream.close().await);
    db.drop_slot().await;
}
