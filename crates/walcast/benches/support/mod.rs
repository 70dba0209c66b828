//! What the `walcast` benchmark programs share: numbers from the environment, the peak RSS of
//! a process, and samples of a running service's `/metrics`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::Context as _;

/// The environment variable `name` as a number, `default` when unset.
pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name} must be a number")),
        Err(_) => Ok(default),
    }
}

/// Peak resident set size (`VmHWM`) of process `pid`, in KiB; 0 when unknown.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `metric` from the admin endpoint on `port`, summed over its series (0 when absent).
pub fn scrape(port: u16, metric: &str) -> anyhow::Result<f64> {
    let (_, body) = get(port, "/metrics")?;
    Ok(body
        .lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// A minimal HTTP/1.1 GET: the status and the whole response.
pub fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let status = body
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body))
}
