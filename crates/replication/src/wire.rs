//! Framing of the frontend/backend protocol over a [`Stream`].
//!
//! `postgres-protocol` parses and builds the messages; this module buffers
//! bytes and adds the one backend message it does not know,
//! `CopyBothResponse` (`W`), which starts replication streaming.

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{self, ErrorResponseBody, Header, NoticeResponseBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::error::{Error, Result, ServerError};
use walcast_postgres::Stream;

const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// A backend message, including `CopyBothResponse`.
#[allow(missing_debug_implementations)]
pub(crate) enum Backend {
    Message(backend::Message),
    CopyBothResponse,
}

/// A buffered, framed connection.
#[derive(Debug)]
pub(crate) struct Wire {
    stream: Stream,
    read: BytesMut,
    write: BytesMut,
}

impl Wire {
    pub(crate) fn new(stream: Stream) -> Wire {
        Wire {
            stream,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::with_capacity(1024),
        }
    }

    /// Builds a message into the write buffer; [`Wire::flush`] sends it.
    pub(crate) fn encode(
        &mut self,
        f: impl FnOnce(&mut BytesMut) -> std::io::Result<()>,
    ) -> Result<()> {
        f(&mut self.write).map_err(|e| Error::Protocol(format!("encoding a message: {e}")))
    }

    /// Writes everything encoded so far.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.stream
            .write_all(&self.write)
            .await
            .map_err(|e| Error::io("writing to server", e))?;
        self.write.clear();
        self.stream
            .flush()
            .await
            .map_err(|e| Error::io("writing to server", e))
    }

    /// The next message, skipping (and logging) notices.
    ///
    /// Cancel safe: bytes read before a cancellation stay buffered.
    pub(crate) async fn recv(&mut self, doing: &'static str) -> Result<Backend> {
        loop {
            if let Some(msg) = self.parse()? {
                if let Backend::Message(backend::Message::NoticeResponse(body)) = &msg {
                    log_notice(body);
                    continue;
                }
                return Ok(msg);
            }
            let n = self
                .stream
                .read_buf(&mut self.read)
                .await
                .map_err(|e| Error::io(format!("reading from server while {doing}"), e))?;
            if n == 0 {
                return Err(Error::Closed(doing));
            }
        }
    }

    fn parse(&mut self) -> Result<Option<Backend>> {
        let bad = |e: std::io::Error| Error::Protocol(format!("malformed backend message: {e}"));
        let Some(header) = Header::parse(&self.read).map_err(bad)? else {
            return Ok(None);
        };
        if header.tag() == COPY_BOTH_RESPONSE_TAG {
            let total = header.len() as usize + 1;
            if self.read.len() < total {
                self.read.reserve(total - self.read.len());
                return Ok(None);
            }
            // Overall format, column count and formats: nothing we need.
            self.read.advance(total);
            return Ok(Some(Backend::CopyBothResponse));
        }
        Ok(backend::Message::parse(&mut self.read)
            .map_err(bad)?
            .map(Backend::Message))
    }

    pub(crate) async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// Turns an `ErrorResponse` into a [`ServerError`], keeping the SQLSTATE.
pub(crate) fn server_error(body: &ErrorResponseBody) -> ServerError {
    let mut e = ServerError {
        severity: "ERROR".to_owned(),
        code: "XX000".to_owned(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'V' => e.severity = v,
            b'S' if e.severity == "ERROR" => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    e
}

fn log_notice(body: &NoticeResponseBody) {
    let mut fields = body.fields();
    let (mut severity, mut message) = (String::new(), String::new());
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'V' => severity = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    if severity == "WARNING" {
        warn!(%severity, "server notice: {message}");
    } else {
        debug!(%severity, "server notice: {message}");
    }
}

/// Describes an unexpected message for an error.
pub(crate) fn unexpected(msg: &Backend, doing: &str) -> Error {
    let name = match msg {
        Backend::CopyBothResponse => "CopyBothResponse",
        Backend::Message(m) => match m {
            backend::Message::AuthenticationOk => "AuthenticationOk",
            backend::Message::CommandComplete(_) => "CommandComplete",
            backend::Message::CopyData(_) => "CopyData",
            backend::Message::CopyDone => "CopyDone",
            backend::Message::CopyInResponse(_) => "CopyInResponse",
            backend::Message::CopyOutResponse(_) => "CopyOutResponse",
            backend::Message::DataRow(_) => "DataRow",
            backend::Message::EmptyQueryResponse => "EmptyQueryResponse",
            backend::Message::ReadyForQuery(_) => "ReadyForQuery",
            backend::Message::RowDescription(_) => "RowDescription",
            _ => "another message",
        },
    };
    Error::Protocol(format!("unexpected {name} while {doing}"))
}
