//! Authentication methods and Unix sockets, on a cluster with password hba lines.

use walcast_postgres::{Dsn, connect_sql};
use walcast_replication::{Error, ReplicationConnection};
use walcast_testkit::Postgres;

use crate::support::ok;

fn auth_cluster() -> Postgres {
    let mut b = Postgres::builder().setting("password_encryption", "'scram-sha-256'");
    for (user, method) in [
        ("scram_u", "scram-sha-256"),
        ("md5_u", "md5"),
        ("clear_u", "password"),
    ] {
        for db in ["all", "replication"] {
            b = b.hba_line(&format!("host {db} {user} 127.0.0.1/32 {method}"));
        }
    }
    let pg = ok(b.start());
    ok(pg.psql(
        "postgres",
        "CREATE ROLE scram_u LOGIN REPLICATION PASSWORD 'scr am''pw';
         SET password_encryption = 'md5';
         CREATE ROLE md5_u LOGIN REPLICATION PASSWORD 'md5pw';
         CREATE ROLE clear_u LOGIN REPLICATION PASSWORD 'clearpw';",
    ));
    pg
}

async fn connect_both(pg: &Postgres, user: &str, password: &str) -> Result<(), Error> {
    let dsn = format!(
        "host=127.0.0.1 port={} user={user} password='{}' dbname=postgres",
        pg.port(),
        password.replace('\'', "\\'")
    );
    let config = Dsn::parse(&dsn)?;
    let mut conn = ReplicationConnection::connect(&config).await?;
    conn.identify_system().await?;
    conn.close().await;
    let client = connect_sql(&config).await?;
    let me: String = ok(client.query_one("SELECT current_user::text", &[]).await).get(0);
    assert_eq!(me, user);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_md5_and_cleartext_passwords() {
    let pg = auth_cluster();
    ok(connect_both(&pg, "scram_u", "scr am'pw").await);
    ok(connect_both(&pg, "md5_u", "md5pw").await);
    ok(connect_both(&pg, "clear_u", "clearpw").await);

    for user in ["scram_u", "md5_u", "clear_u"] {
        let e = match connect_both(&pg, user, "wrong").await {
            Ok(()) => panic!("{user} logged in with a wrong password"),
            Err(e) => e,
        };
        assert_eq!(e.sqlstate(), Some("28P01"), "{user}: {e}");
        assert!(
            e.to_string().contains("password authentication failed"),
            "{e}"
        );
        assert!(!e.is_retryable());
    }

    let config = ok(Dsn::parse(&format!(
        "host=127.0.0.1 port={} user=scram_u dbname=postgres",
        pg.port()
    )));
    let e = match ReplicationConnection::connect(&config).await {
        Ok(_) => panic!("connected without a password"),
        Err(e) => e,
    };
    assert_eq!(
        e.to_string(),
        "authentication: the server asks for a password for role \"scram_u\" but the DSN has none; add password=... to the DSN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_and_url_dsn() {
    let pg = ok(Postgres::start());
    let dsn = format!(
        "host={} port={} user=postgres dbname=postgres",
        pg.socket_dir().display(),
        pg.port()
    );
    let config = ok(Dsn::parse(&dsn));
    let mut conn = ok(ReplicationConnection::connect(&config).await);
    ok(conn.identify_system().await);
    conn.close().await;

    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable&application_name=urltest",
        pg.port()
    );
    let client = ok(connect_sql(&ok(Dsn::parse(&url))).await);
    let app: String = ok(client.query_one("SHOW application_name", &[]).await).get(0);
    assert_eq!(app, "urltest");
}
