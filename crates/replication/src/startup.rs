//! Connection startup and authentication.
//!
//! ```text
//!  StartupMessage(user, database, replication=database) ──▶
//!  ◀── AuthenticationOk | CleartextPassword | MD5Password | SASL
//!       (password / md5 / SCRAM-SHA-256[-PLUS] exchange)
//!  ◀── ParameterStatus*, BackendKeyData, ReadyForQuery
//! ```
//!
//! SCRAM-SHA-256-PLUS (channel binding to the TLS certificate) is used when the
//! connection is encrypted and the server offers it.

use std::collections::HashMap;

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramSha256,
};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tracing::debug;

use crate::error::{Error, Result};
use crate::wire::{Backend, Wire, server_error, unexpected};
use walcast_postgres::Dsn;
use walcast_postgres::Stream;

/// What the server told us at startup.
#[derive(Debug, Clone, Default)]
pub(crate) struct Session {
    pub(crate) parameters: HashMap<String, String>,
    pub(crate) backend_pid: i32,
}

/// Connects, authenticates and waits for `ReadyForQuery`, all within
/// `connect_timeout` when one is set.
pub(crate) async fn connect(config: &Dsn, replication: bool) -> Result<(Wire, Session)> {
    let fut = connect_inner(config, replication);
    match config.connect_timeout() {
        Some(limit) => tokio::time::timeout(limit, fut).await.map_err(|_| {
            Error::io(
                format!("connecting to {config}"),
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no session within connect_timeout={}s", limit.as_secs()),
                ),
            )
        })?,
        None => fut.await,
    }
}

async fn connect_inner(config: &Dsn, replication: bool) -> Result<(Wire, Session)> {
    let (stream, binding) = Stream::connect(config).await?;
    let mut wire = Wire::new(stream);
    let mut params = vec![
        ("user", config.user()),
        ("database", config.dbname()),
        ("client_encoding", "UTF8"),
    ];
    if replication {
        params.push(("replication", "database"));
    }
    if let Some(app) = config.application_name() {
        params.push(("application_name", app));
    }
    // pgoutput renders values with the walsender's DateStyle, TimeZone, …: forced, after the
    // DSN's own options (walcast_config::session_options).
    let options = walcast_config::session_options(config.options());
    params.push(("options", &options));
    wire.encode(|b| frontend::startup_message(params.iter().copied(), b))?;
    wire.flush().await?;
    authenticate(&mut wire, config, binding).await?;

    let mut session = Session::default();
    loop {
        match wire.recv("starting the session").await? {
            Backend::Message(Message::ParameterStatus(p)) => {
                if let (Ok(k), Ok(v)) = (p.name(), p.value()) {
                    session.parameters.insert(k.to_owned(), v.to_owned());
                }
            }
            Backend::Message(Message::BackendKeyData(k)) => session.backend_pid = k.process_id(),
            Backend::Message(Message::ReadyForQuery(_)) => break,
            Backend::Message(Message::ErrorResponse(e)) => {
                return Err(server_error(&e).into());
            }
            other => return Err(unexpected(&other, "starting the session")),
        }
    }
    debug!(
        user = config.user(),
        dbname = config.dbname(),
        replication,
        pid = session.backend_pid,
        "connected"
    );
    Ok((wire, session))
}

async fn authenticate(wire: &mut Wire, config: &Dsn, binding: Option<Vec<u8>>) -> Result<()> {
    const DOING: &str = "authenticating";
    let password = || {
        config.password().ok_or_else(|| {
            Error::Auth(format!(
                "the server asks for a password for role \"{}\" but the DSN has none; add password=... to the DSN",
                config.user()
            ))
        })
    };
    match wire.recv(DOING).await? {
        Backend::Message(Message::AuthenticationOk) => return Ok(()),
        Backend::Message(Message::AuthenticationCleartextPassword) => {
            let pw = password()?;
            wire.encode(|b| frontend::password_message(pw.as_bytes(), b))?;
        }
        Backend::Message(Message::AuthenticationMd5Password(body)) => {
            let hash = md5_hash(
                config.user().as_bytes(),
                password()?.as_bytes(),
                body.salt(),
            );
            wire.encode(|b| frontend::password_message(hash.as_bytes(), b))?;
        }
        Backend::Message(Message::AuthenticationSasl(body)) => {
            let mut mechanisms = body.mechanisms();
            let (mut scram, mut scram_plus) = (false, false);
            while let Some(m) = mechanisms
                .next()
                .map_err(|e| Error::Protocol(format!("reading SASL mechanisms: {e}")))?
            {
                scram |= m == SCRAM_SHA_256;
                scram_plus |= m == SCRAM_SHA_256_PLUS;
            }
            let (mechanism, channel_binding) = match binding {
                Some(data) if scram_plus => (
                    SCRAM_SHA_256_PLUS,
                    ChannelBinding::tls_server_end_point(data),
                ),
                Some(_) if scram => (SCRAM_SHA_256, ChannelBinding::unrequested()),
                None if scram => (SCRAM_SHA_256, ChannelBinding::unsupported()),
                _ => {
                    return Err(Error::Auth(
                        "the server offers no SASL mechanism we support (SCRAM-SHA-256); check password_encryption and pg_hba.conf".to_owned(),
                    ));
                }
            };
            sasl(wire, password()?, mechanism, channel_binding).await?;
        }
        Backend::Message(Message::ErrorResponse(e)) => return Err(server_error(&e).into()),
        Backend::Message(
            Message::AuthenticationGss
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential,
        ) => {
            return Err(Error::Auth(format!(
                "the server asks role \"{}\" for GSSAPI/SSPI/Kerberos authentication, which walcast does not support; use scram-sha-256, md5, password or trust in pg_hba.conf",
                config.user()
            )));
        }
        other => return Err(unexpected(&other, DOING)),
    }
    wire.flush().await?;
    expect_auth_ok(wire).await
}

async fn sasl(
    wire: &mut Wire,
    password: &str,
    mechanism: &str,
    channel_binding: ChannelBinding,
) -> Result<()> {
    const DOING: &str = "authenticating with SCRAM-SHA-256";
    let mut scram = ScramSha256::new(password.as_bytes(), channel_binding);
    wire.encode(|b| frontend::sasl_initial_response(mechanism, scram.message(), b))?;
    wire.flush().await?;
    match wire.recv(DOING).await? {
        Backend::Message(Message::AuthenticationSaslContinue(body)) => {
            scram
                .update(body.data())
                .map_err(|e| Error::Auth(format!("SCRAM exchange failed: {e}")))?;
        }
        Backend::Message(Message::ErrorResponse(e)) => return Err(server_error(&e).into()),
        other => return Err(unexpected(&other, DOING)),
    }
    wire.encode(|b| frontend::sasl_response(scram.message(), b))?;
    wire.flush().await?;
    match wire.recv(DOING).await? {
        Backend::Message(Message::AuthenticationSaslFinal(body)) => scram
            .finish(body.data())
            .map_err(|e| Error::Auth(format!("the server's SCRAM signature did not verify: {e}"))),
        Backend::Message(Message::ErrorResponse(e)) => Err(server_error(&e).into()),
        other => Err(unexpected(&other, DOING)),
    }
}

async fn expect_auth_ok(wire: &mut Wire) -> Result<()> {
    match wire.recv("authenticating").await? {
        Backend::Message(Message::AuthenticationOk) => Ok(()),
        Backend::Message(Message::ErrorResponse(e)) => Err(server_error(&e).into()),
        other => Err(unexpected(&other, "authenticating")),
    }
}
