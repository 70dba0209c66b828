//! Ordinary SQL connections (tokio-postgres) over walcast's own transport.
//!
//! The SQL connection goes through the same transport as the replication connection (TCP or
//! Unix socket, TLS by `sslmode`), handed to tokio-postgres with `connect_raw` once TLS is up.

use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode as PgSslMode;
use tracing::debug;

use crate::dsn::Dsn;
use crate::error::{Error, Result};
use crate::transport::Stream;

/// Opens an ordinary SQL connection; the connection task runs on the
/// current Tokio runtime until the returned client is dropped.
pub async fn connect_sql(config: &Dsn) -> Result<tokio_postgres::Client> {
    let fut = async {
        let (stream, _) = Stream::connect(config).await?;
        let mut pg = tokio_postgres::Config::new();
        pg.user(config.user())
            .dbname(config.dbname())
            .ssl_mode(PgSslMode::Disable);
        if let Some(p) = config.password() {
            pg.password(p);
        }
        if let Some(a) = config.application_name() {
            pg.application_name(a);
        }
        // DateStyle, TimeZone, … forced: the text of values is parsed (walcast_config docs).
        pg.options(walcast_config::session_options(config.options()));
        let (client, connection) = pg
            .connect_raw(stream, NoTls)
            .await
            .map_err(Error::sql(format!("connecting to {config}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "SQL connection ended");
            }
        });
        Ok(client)
    };
    match config.connect_timeout() {
        Some(limit) => tokio::time::timeout(limit, fut).await.map_err(|_| {
            Error::io(
                format!("connecting to {config}"),
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect_timeout expired"),
            )
        })?,
        None => fut.await,
    }
}
