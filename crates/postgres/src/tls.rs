//! TLS by `sslmode` and `sslrootcert`, the libpq way, for both kinds of connection: the ones
//! walcast opens itself ([`crate::Stream`]: replication and [`crate::connect_sql`]) and the
//! pooled ones tokio-postgres opens ([`MakeTls`], for [`crate::pool`]).
//!
//! `require` checks the chain only when `sslrootcert` is given; `verify-ca` checks the chain;
//! `verify-full` also checks that the certificate names the host.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::{Ssl, SslConnector, SslMethod, SslRef, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_openssl::SslStream;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::dsn::{Dsn, Host, SslMode};
use crate::error::{Error, Result};

/// Unix sockets never use TLS (neither does libpq), so a mode that insists on it is refused.
pub(crate) fn check_unix_socket(config: &Dsn) -> Result<()> {
    match (config.host(), config.socket_path()) {
        (Host::Unix(_), Some(path)) if config.ssl_mode().requires_tls() => {
            Err(Error::Config(format!(
                "sslmode={} cannot be used with the Unix socket {}; connect over TCP (host=127.0.0.1) or use sslmode=prefer",
                config.ssl_mode().as_str(),
                path.display()
            )))
        }
        _ => Ok(()),
    }
}

/// The connector for `config`'s `sslmode` and `sslrootcert`; a missing or unreadable CA is a
/// config error.
pub(crate) fn connector(config: &Dsn) -> Result<SslConnector> {
    let err = |e: openssl::error::ErrorStack| Error::Tls(format!("configuring TLS: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(err)?;
    let verify = match (config.ssl_mode(), config.ssl_root_cert()) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(Error::Config(format!(
                "sslmode={} needs the CA that signed the server certificate; set sslrootcert=/path/to/ca.pem (or sslrootcert=system for the system trust store)",
                config.ssl_mode().as_str()
            )));
        }
        // Like libpq: `require` checks the chain only when a CA is given.
        (_, Some(root)) => {
            if root.as_os_str() == "system" {
                b.set_default_verify_paths().map_err(err)?;
            } else {
                b.set_ca_file(root).map_err(|e| {
                    Error::Config(format!(
                        "cannot load sslrootcert {}: {e}; point sslrootcert at a PEM CA file",
                        root.display()
                    ))
                })?;
            }
            config.ssl_mode().requires_tls()
        }
        (_, None) => false,
    };
    b.set_verify(if verify {
        SslVerifyMode::PEER
    } else {
        SslVerifyMode::NONE
    });
    Ok(b.build())
}

/// One TLS session to `host`, checking the host name for `verify-full`.
pub(crate) fn ssl(connector: &SslConnector, mode: SslMode, host: &str) -> Result<Ssl> {
    connector
        .configure()
        .and_then(|mut c| {
            c.set_verify_hostname(mode == SslMode::VerifyFull);
            c.into_ssl(host)
        })
        .map_err(|e| Error::Tls(format!("configuring TLS: {e}")))
}

/// A failed handshake, saying whether the certificate did not verify and how to fix that.
pub(crate) fn handshake_error(host: &str, ssl: &SslRef, e: openssl::ssl::Error) -> Error {
    let verify = ssl.verify_result();
    if verify != openssl::x509::X509VerifyResult::OK {
        Error::Tls(format!(
            "server certificate of {host} did not verify ({}); give the issuing CA with sslrootcert=/path/ca.pem, or relax sslmode",
            verify.error_string()
        ))
    } else {
        Error::Tls(format!("TLS handshake with {host} failed: {e}"))
    }
}

/// `tls-server-end-point` (RFC 5929): the server certificate hashed with the
/// hash of its signature algorithm, SHA-256 for MD5 and SHA-1.
pub(crate) fn channel_binding(ssl: &SslRef) -> Option<Vec<u8>> {
    let cert = ssl.peer_certificate()?;
    let algo = cert.signature_algorithm().object().nid();
    let digest = match algo.signature_algorithms().map(|a| a.digest) {
        Some(Nid::MD5 | Nid::SHA1) | None => MessageDigest::sha256(),
        Some(nid) => MessageDigest::from_nid(nid)?,
    };
    cert.digest(digest).ok().map(|d| d.to_vec())
}

/// TLS for connections tokio-postgres opens (pools): the same checks as [`crate::Stream`].
#[derive(Clone)]
pub(crate) struct MakeTls {
    connector: SslConnector,
    mode: SslMode,
}

impl std::fmt::Debug for MakeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl MakeTls {
    pub(crate) fn new(config: &Dsn) -> Result<MakeTls> {
        check_unix_socket(config)?;
        Ok(MakeTls {
            connector: connector(config)?,
            mode: config.ssl_mode(),
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MakeTlsConnect<S> for MakeTls {
    type Stream = TlsStream<S>;
    type TlsConnect = Handshake;
    type Error = Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake> {
        Ok(Handshake {
            ssl: ssl(&self.connector, self.mode, host)?,
            host: host.to_owned(),
        })
    }
}

/// One pending handshake with `host`.
#[derive(Debug)]
pub(crate) struct Handshake {
    ssl: Ssl,
    host: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for Handshake {
    type Stream = TlsStream<S>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let Handshake { ssl, host } = self;
            let mut stream = SslStream::new(ssl, stream)
                .map_err(|e| Error::Tls(format!("configuring TLS: {e}")))?;
            Pin::new(&mut stream)
                .connect()
                .await
                .map_err(|e| handshake_error(&host, stream.ssl(), e))?;
            Ok(TlsStream(stream))
        })
    }
}

/// An established TLS stream under a pooled connection.
#[derive(Debug)]
pub(crate) struct TlsStream<S>(SslStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        match channel_binding(self.0.ssl()) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
