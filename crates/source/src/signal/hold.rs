//! Against a real Postgres 15 and the kit's Kafka: a signal row becomes a command, and the
//! slot is not confirmed past the transaction that carried it until the command is accepted.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};
use walcast_pgoutput::Lsn;
use walcast_telemetry::admin::Health;
use walcast_telemetry::metrics::Registry;
use walcast_testkit::{Kafka, Postgres, unique_name, wait_until_async};

use crate::metrics::EVENTS_PUBLISHED;
use crate::snapshot::Command;
use crate::{Options, Source, SourceConfig};

const WRITE_SQL: &str = include_str!("../../../../sql/write.sql");

/// One cluster for the tests of this file (each has its own database, slot and topic).
fn pg() -> &'static Postgres {
    static PG: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    PG.get_or_init(|| ok(Postgres::start()))
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn connect(dsn: &str) -> Client {
    let (client, connection) = ok(tokio_postgres::connect(dsn, NoTls).await);
    tokio::spawn(connection);
    client
}

async fn text(client: &Client, sql: &str) -> String {
    ok(client.query_one(sql, &[]).await).get(0)
}

/// An outbox row (one event) in its own transaction.
fn outbox_row(n: u32) -> String {
    format!(
        "INSERT INTO outbox_messages (id, aggregate_id, event_type, occurred_at, payload) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'ProductCreated', now(), '{{\"n\": {n}}}');"
    )
}

fn metric(registry: &Registry, name: &str) -> f64 {
    registry
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find(|l| l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A database with the write schema: its name, DSN and a client.
async fn database(prefix: &str) -> (String, String, Client) {
    let name = unique_name(prefix);
    ok(pg().create_database(&name));
    let dsn = pg().dsn(&name);
    let client = connect(&dsn).await;
    ok(client.batch_execute(WRITE_SQL).await);
    (name, dsn, client)
}

/// A source config for `name`'s database with `public.products` snapshottable.
fn config(name: &str, dsn: &str, create: bool) -> SourceConfig {
    let dir = ok(tempfile::tempdir());
    let path = dir.path().join("source.toml");
    let toml = format!(
        r#"
[postgres]
dsn = "{dsn}"
slot = "{name}_slot"
publication = "{name}_pub"
create = {create}
status_interval_ms = 100

[kafka]
brokers = "{brokers}"
topic = "{name}.events"
partitions = 1
replication_factor = 1

[admin]
listen = "127.0.0.1:0"

[snapshot]
signal_table = "public.walcast_signal"

[[snapshot.tables]]
table = "public.products"
key = "id"
event_type = "ProductSnapshot"
version_column = "version"
occurred_at_column = "updated_at"
"#,
        brokers = ok(Kafka::shared()).bootstrap()
    );
    ok(std::fs::write(&path, toml));
    ok(SourceConfig::load(&path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_holds_its_transaction_until_the_request_is_accepted() {
    let (name, dsn, client) = database("signal_hold").await;
    let config = config(&name, &dsn, true);

    let (commands, mut received) = mpsc::unbounded_channel::<Command>();

    let registry = Registry::default();
    let source = Source::new(config, Options::default(), &registry, Health::default())
        .with_commands(commands);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(source.run(async {
        let _ = stopped.await;
    }));

    let slot = format!("{name}_slot");
    let confirmed_at_least = |lsn: Lsn| {
        let (client, slot) = (&client, &slot);
        async move {
            let sql = format!(
                "SELECT coalesce(confirmed_flush_lsn >= '{lsn}'::pg_lsn, false)::text \
                 FROM pg_replication_slots WHERE slot_name = '{slot}'"
            );
            matches!(client.query_opt(&sql, &[]).await, Ok(Some(r)) if r.get::<_, String>(0) == "true")
        }
    };
    let current = || async {
        ok(text(&client, "SELECT pg_current_wal_lsn()::text")
            .await
            .parse::<Lsn>())
    };

    // The source made the signal table and put it in its publication.
    ok(wait_until_async("the source streaming", Duration::from_secs(60), || async {
        text(&client, &format!("SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '{slot}' AND active")).await == "1"
    })
    .await);
    let published = text(
        &client,
        &format!("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = '{name}_pub'"),
    )
    .await;
    assert_eq!(published, "outbox_messages,walcast_signal");

    // Control: a transaction with an event is confirmed once the broker acknowledged it.
    ok(client.batch_execute(&outbox_row(1)).await);
    let first = current().await;
    ok(
        wait_until_async("the first event confirmed", Duration::from_secs(60), || {
            confirmed_at_least(first)
        })
        .await,
    );

    // The signal, in a transaction with an event; then a transaction with another event.
    ok(client
        .batch_execute(&format!(
            "BEGIN; INSERT INTO walcast_signal (id, type, data) VALUES ('snap-1', 'execute-snapshot', \
             '{{\"data-collections\": [\"public.products\"], \"type\": \"incremental\"}}'); {} COMMIT;",
            outbox_row(2)
        ))
        .await);
    let signal = current().await;
    ok(client.batch_execute(&outbox_row(3)).await);
    let last = current().await;

    let command = ok(tokio::time::timeout(Duration::from_secs(60), received.recv()).await)
        .expect("the command channel is open");
    let Command::Start {
        id,
        tables,
        requested_by,
        accepted: Some(accepted),
    } = command
    else {
        panic!("expected a Start with an acceptance: {command:?}");
    };
    assert_eq!(
        (id.as_str(), tables, requested_by.as_str()),
        ("snap-1", vec!["public.products".to_owned()], "signal")
    );

    // Both later events are acknowledged; still the slot stays before the signal's
    // transaction for as long as the request is not accepted (many status intervals).
    ok(wait_until_async(
        "three events acknowledged",
        Duration::from_secs(60),
        || async { metric(&registry, EVENTS_PUBLISHED) >= 3.0 },
    )
    .await);
    let passed = wait_until_async(
        "the slot confirmed past the signal",
        Duration::from_secs(3),
        || confirmed_at_least(signal),
    )
    .await;
    assert!(
        passed.is_err(),
        "the slot was confirmed past the signal's transaction ({signal}) before the request was accepted"
    );

    accepted();
    ok(wait_until_async(
        "the slot confirmed past the signal",
        Duration::from_secs(60),
        || confirmed_at_least(last),
    )
    .await);

    let _ = stop.send(());
    let joined = ok(tokio::time::timeout(Duration::from_secs(60), task).await);
    ok(ok(joined));
    assert!(received.try_recv().is_err(), "one signal, one command");
}

/// Runs a source on `config` until it stops by itself; its error.
async fn start_up_error(config: SourceConfig) -> String {
    let source = Source::new(
        config,
        Options::default(),
        &Registry::default(),
        Health::default(),
    );
    let run = source.run(std::future::pending());
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(())) => panic!("the source stopped without an error"),
        Err(_) => panic!("the source did not stop within 60 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_create_a_missing_signal_table_is_a_start_up_error_naming_the_ddl() {
    let (name, dsn, client) = database("signal_ddl").await;
    // A slot cannot be created in a transaction that wrote: two statements.
    for sql in [
        format!("CREATE PUBLICATION {name}_pub FOR TABLE outbox_messages"),
        format!("SELECT pg_create_logical_replication_slot('{name}_slot', 'pgoutput')"),
    ] {
        ok(client.batch_execute(&sql).await);
    }
    let e = start_up_error(config(&name, &dsn, false)).await;
    assert!(
        e.contains(r#"CREATE TABLE IF NOT EXISTS "public"."walcast_signal" (id text PRIMARY KEY, type text NOT NULL, data text)"#)
            && e.contains("owned by the publication's owner")
            && e.contains("create = true"),
        "{e}"
    );

    // The table exists, but not in the publication: the statement that adds it.
    ok(client
        .batch_execute(
            "CREATE TABLE walcast_signal (id text PRIMARY KEY, type text NOT NULL, data text)",
        )
        .await);
    let e = start_up_error(config(&name, &dsn, false)).await;
    assert!(
        e.contains(&format!(
            r#"ALTER PUBLICATION "{name}_pub" ADD TABLE "public"."walcast_signal""#
        )),
        "{e}"
    );
    ok(client
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{name}_slot')"))
        .await);
}
