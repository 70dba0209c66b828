//! The catalog app: the write side and the read side of walcast's example service.
//!
//! ```text
//!  client ──POST/PUT/DELETE──▶ write API ──one transaction──▶ catalog_write (leader)
//!                                              products (version + 1)
//!                                              outbox_messages (one event)
//!                                                   │ WAL → walcast source → Kafka
//!                                                   ▼       → walcast sink
//!  client ◀──GET /products──── query API ◀── round-robin ── catalog_read on replica-1..3
//!                              (skips a replica that is down or lagging; says which served)
//! ```
//!
//! * [`WriteApi`]: product commands; each is one transaction that changes `products` and
//!   inserts one `outbox_messages` row, with `If-Match` optimistic concurrency, an
//!   `Idempotency-Key` that makes retries safe, and RFC 7807 problem bodies.
//! * [`QueryApi`]: `catalog_product_read` from the read replicas, with lag per answer.
//! * [`app::run`]: both, with the admin endpoints and the replica probe loop.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use walcast_catalog::{PoolOptions, WriteApi};
//! use walcast_postgres::Dsn;
//! use walcast_telemetry::metrics::Registry;
//!
//! let api = WriteApi::new(
//!     &Dsn::parse("host=127.0.0.1 port=5432 user=postgres dbname=catalog_write sslmode=prefer")?,
//!     PoolOptions::default(),
//!     &Registry::default(),
//! )?;
//! api.check().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! walcast_catalog::serve(listener, api.router(), std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod app;
mod command;
mod error;
mod idempotency;
mod lag;
pub mod metrics;
mod money;
mod outbox;
mod pool;
mod problem;
mod product;
mod query_api;
mod read_model;
mod replica;
mod write_api;

pub use app::AppConfig;
pub use error::{Error, FieldError, Result};
pub use idempotency::KeyRetention;
pub use lag::{LagPolicy, ReplicaStatus};
pub use pool::PoolOptions;
pub use problem::{PROBLEM_JSON, Problem};
pub use product::Product;
pub use query_api::{LAG_BYTES_HEADER, LAG_HEADER, LSN_HEADER, QueryApi, REPLICA_HEADER};
pub use replica::ReplicaConfig;
pub use write_api::WriteApi;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

/// Serves `router` on an already bound listener until `shutdown` completes; in-flight
/// requests finish first. Bind port 0 in tests and read `local_addr`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
