//! How walcast connects to Postgres over SQL and reads its answers.
//!
//! ```text
//!  connector file ─▶ Dsn (parsed once, at load; never prints the password)
//!                     │
//!                     ├─▶ Stream: TCP | Unix socket | TLS by sslmode ─▶ replication client (walsender)
//!                     │                                              └▶ connect_sql: one tokio-postgres client
//!                     └─▶ pool: deadpool-postgres, TLS by the same rules (the catalog app)
//!
//!  a driver error ─▶ sqlstate::is_transient: retry with backoff, or tell an operator
//! ```
//!
//! The source, the sink, the catalog app and the replication client all take a [`Dsn`] and
//! connect through this crate, so `sslmode`, `sslrootcert`, Unix sockets and the password
//! rules are the same everywhere. Each keeps its own error type and maps [`Error`] into it;
//! which SQLSTATEs clear by themselves is written once, in [`sqlstate`].
//!
//! ```no_run
//! # async fn demo() -> walcast_postgres::Result<()> {
//! let dsn: walcast_postgres::Dsn = "host=127.0.0.1 user=postgres dbname=app sslmode=prefer".parse()?;
//! let client = walcast_postgres::connect_sql(&dsn).await?;
//! client.batch_execute("SELECT 1").await.map_err(walcast_postgres::Error::sql("probing"))?;
//! # Ok(()) }
//! ```

mod dsn;
mod error;
mod pool;
mod sql;
pub mod sqlstate;
mod tls;
mod transport;

pub use dsn::{Dsn, Host, SslMode};
pub use error::{Error, Result, sql_hint, sql_text};
pub use pool::{PoolSettings, pool};
pub use sql::connect_sql;
pub use transport::Stream;
