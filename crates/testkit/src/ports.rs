//! Free loopback ports.
//!
//! Binding port 0 and releasing it is racy in principle, so ports are also remembered within the
//! process: two components of one test binary never get the same port.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use crate::KitError;

/// A loopback port nobody listens on, never handed out twice in this process (so two
/// components of one test binary cannot race for it).
pub fn free_port() -> Result<u16, KitError> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..64 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(KitError::io("127.0.0.1:0"))?;
        let port = listener
            .local_addr()
            .map_err(KitError::io("127.0.0.1:0"))?
            .port();
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(KitError::Io {
        path: "127.0.0.1:0".into(),
        source: std::io::Error::other("no free port after 64 tries"),
    })
}
