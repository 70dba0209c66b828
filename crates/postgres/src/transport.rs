//! The byte stream under a connection: TCP, Unix socket, or TLS over TCP.
//!
//! TLS is negotiated the libpq way: send `SSLRequest`, read one byte; `S`
//! means start the handshake, `N` means the server declines, which is fine for
//! `sslmode=prefer` and an error for `require` and stricter. Unix sockets
//! never use TLS (neither does libpq).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_openssl::SslStream;
use tracing::debug;

use crate::dsn::{Dsn, Host, SslMode};
use crate::error::{Error, Result};
use crate::tls;

/// Idle time before the first TCP keepalive probe, and between probes.
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// An established, possibly encrypted, byte stream to the server.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// A Unix socket.
    Unix(UnixStream),
    /// TLS over TCP.
    Tls(Box<SslStream<TcpStream>>),
}

impl Stream {
    /// Connects and negotiates TLS according to `sslmode`.
    ///
    /// Also returns the `tls-server-end-point` channel binding data (the hash
    /// of the server certificate) when TLS is in use, for SCRAM-SHA-256-PLUS.
    pub async fn connect(config: &Dsn) -> Result<(Stream, Option<Vec<u8>>)> {
        match config.host() {
            Host::Unix(_) => {
                let path = config.socket_path().unwrap_or_default();
                tls::check_unix_socket(config)?;
                let s = UnixStream::connect(&path).await.map_err(|e| {
                    Error::io(format!("connecting to Unix socket {}", path.display()), e)
                })?;
                Ok((Stream::Unix(s), None))
            }
            Host::Tcp(host) => {
                let tcp = TcpStream::connect((host.as_str(), config.port()))
                    .await
                    .map_err(|e| {
                        Error::io(
                            format!(
                                "connecting to {host}:{} (check host and port in the dsn, and \
                                 that Postgres is running and reachable there)",
                                config.port()
                            ),
                            e,
                        )
                    })?;
                tcp.set_nodelay(true)
                    .map_err(|e| Error::io("setting TCP_NODELAY", e))?;
                // A peer that vanished without a FIN (host down, cable cut) is noticed within
                // about a minute and a half instead of the kernel's two hours.
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(KEEPALIVE_IDLE)
                    .with_interval(KEEPALIVE_IDLE);
                socket2::SockRef::from(&tcp)
                    .set_tcp_keepalive(&keepalive)
                    .map_err(|e| Error::io("setting TCP keepalive", e))?;
                if config.ssl_mode() == SslMode::Disable {
                    return Ok((Stream::Tcp(tcp), None));
                }
                negotiate_tls(tcp, host, config).await
            }
        }
    }
}

async fn negotiate_tls(
    mut tcp: TcpStream,
    host: &str,
    config: &Dsn,
) -> Result<(Stream, Option<Vec<u8>>)> {
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut buf);
    tcp.write_all(&buf)
        .await
        .map_err(|e| Error::io("sending SSLRequest", e))?;
    // Read exactly one byte: anything the server sends after 'S' belongs to
    // the TLS handshake and must not be buffered here.
    let answer = tcp
        .read_u8()
        .await
        .map_err(|e| Error::io("reading the answer to SSLRequest", e))?;
    match answer {
        b'S' => {}
        b'N' if config.ssl_mode() == SslMode::Prefer => {
            debug!(
                host,
                "server declined TLS; continuing without (sslmode=prefer)"
            );
            return Ok((Stream::Tcp(tcp), None));
        }
        b'N' => {
            return Err(Error::Tls(format!(
                "server {host} does not accept TLS connections but sslmode={}; set ssl = on in postgresql.conf, or use sslmode=prefer/disable",
                config.ssl_mode().as_str()
            )));
        }
        other => {
            return Err(Error::Protocol(format!(
                "unexpected answer {other:#04x} to SSLRequest (expected 'S' or 'N')"
            )));
        }
    }

    let ssl = tls::ssl(&tls::connector(config)?, config.ssl_mode(), host)?;
    let mut stream =
        SslStream::new(ssl, tcp).map_err(|e| Error::Tls(format!("configuring TLS: {e}")))?;
    Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| tls::handshake_error(host, stream.ssl(), e))?;
    let binding = tls::channel_binding(stream.ssl());
    debug!(
        host,
        version = stream.ssl().version_str(),
        "TLS established"
    );
    Ok((Stream::Tls(Box::new(stream)), binding))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
