//! Shared helpers: one Postgres cluster for tests that never stop it (each test makes its own
//! databases), servers on port 0, a minimal HTTP client, and waiting with a deadline.

#![allow(dead_code)]

pub mod http;

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use tokio::sync::oneshot;
use walcast_testkit::{Postgres, unique_name};

pub const WRITE_SQL: &str = include_str!("../../../../sql/write.sql");
pub const READ_SQL: &str = include_str!("../../../../sql/read.sql");

/// The shared cluster. Its processes die with the test binary.
pub fn shared_pg() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| Postgres::start().unwrap_or_else(|e| panic!("starting Postgres: {e}")))
}

/// A fresh database on `pg` with the write schema; returns its DSN.
pub fn write_db(pg: &Postgres) -> String {
    db_with(pg, "catalog_write", WRITE_SQL)
}

/// A fresh database on `pg` with the read schema; returns its DSN.
pub fn read_db(pg: &Postgres) -> String {
    db_with(pg, "catalog_read", READ_SQL)
}

fn db_with(pg: &Postgres, prefix: &str, sql: &str) -> String {
    let name = unique_name(prefix);
    pg.create_database(&name).unwrap();
    pg.psql(&name, sql).unwrap();
    pg.dsn(&name)
}

pub async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// A router served on 127.0.0.1:0 until dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    pub async fn start(router: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(walcast_catalog::serve(listener, router, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub use walcast_testkit::wait_until_async;
