//! The one table of SQLSTATEs that clear by themselves.
//!
//! *Transient* means the same work can succeed later without anybody changing anything, so
//! the caller retries with backoff (the source and the replication client reconnect, a sink
//! target falls behind alone, the catalog answers 503 with `Retry-After`). Every other
//! SQLSTATE needs an operator or describes the request, and is reported at once.
//!
//! | SQLSTATE | condition | why it clears |
//! |---|---|---|
//! | class `08` | connection exception | the network or the server comes back |
//! | class `40` except `40002` | serialization failure, deadlock, rollback | the server rolled the transaction back; running it again can succeed |
//! | class `53` | insufficient resources (too many connections, out of memory, disk full) | other sessions end, memory and space are freed |
//! | `57P01`, `57P02`, `57P03`, `57P05` | admin or crash shutdown, cannot connect now (starting up, in recovery), idle session timeout | the server restarts or the session is opened again |
//! | `55006` | object in use | a replication slot still held by a walsender that is going away |
//! | `55P03` | lock not available | the holder of the lock finishes |
//! | `58000`, `58030` | system error, I/O error | a failing disk or file system recovers |
//!
//! Not transient although near these: `40002` (an integrity constraint failed at commit:
//! the same data fails again), `57P04` (the database was dropped), `57014` (the statement
//! was cancelled on purpose), `58P01`/`58P02` (a file is missing or exists).

use std::io;

/// Whether a SQLSTATE names a condition that goes away by itself (the table above).
pub fn is_transient(code: &str) -> bool {
    let class_wide = code.starts_with("08") || code.starts_with("40") || code.starts_with("53");
    (class_wide && code != "40002")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57P05" | "55006" | "55P03" | "58000" | "58030"
        )
}

/// Whether a driver error clears by itself: its SQLSTATE is [transient](is_transient), or
/// it has none because the connection broke ([`connection_broke`]).
pub fn connection_is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => is_transient(code.code()),
        None => connection_broke(e),
    }
}

/// Whether a driver error without SQLSTATE says the connection is gone: closed, or an I/O
/// error underneath (reset, timeout, refused).
pub fn connection_broke(e: &tokio_postgres::Error) -> bool {
    e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<io::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_sqlstates() {
        for code in [
            "08000", "08001", "08003", "08006", "08P01", // connection exception
            "40000", "40001", "40003", "40P01", // rollback, serialization, deadlock
            "53000", "53100", "53200", "53300", "53400", // too many connections, ...
            "57P01", "57P02", "57P03", "57P05", // shutdown, cannot connect now, idle timeout
            "55006", "55P03", // object in use, lock not available
            "58000", "58030", // system error, I/O error
        ] {
            assert!(is_transient(code), "{code}");
        }
    }

    #[test]
    fn sqlstates_that_need_someone() {
        for code in [
            "40002", // integrity constraint violation at commit
            "57P04", // database dropped
            "57014", // query cancelled
            "58P01", "58P02", // undefined / duplicate file
            "55000", // object not in prerequisite state
            "42704", "42501", "42P01", "0A000", "XX000", "28P01", "28000", "3D000", "22001",
            "23505", "",
        ] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
