//! What the `walcast` benchmark programs share: numbers from the environment, the peak RSS of
//! a process, and samples of a running service's `/metrics`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use walcast_testkit::Service;

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

/// The connection arguments of a Postgres client program (`psql`, `pg_recvlogical`) for `db`.
pub fn pg_client_args(pg: &walcast_testkit::Postgres, db: &str) -> Vec<String> {
    [
        "-h",
        pg.host(),
        "-p",
        &pg.port().to_string(),
        "-U",
        "postgres",
        "-d",
        db,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `cmd` (stdout to /dev/null) to its end; the seconds it took.
pub fn time_process(cmd: &mut std::process::Command, what: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = cmd
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Runs `walcast ARGS` (a child named `name`, logs in `dir`) until `metric` on its admin
/// `port` reaches `target`; the seconds from spawn and its peak RSS (KiB). It is stopped with
/// SIGTERM (SIGKILL after 30 s) either way.
pub fn time_until(
    name: &str,
    dir: &std::path::Path,
    args: Vec<std::ffi::OsString>,
    port: u16,
    metric: &str,
    target: u64,
    deadline: Duration,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut child = Service::new(name, env!("CARGO_BIN_EXE_walcast"), dir)
        .args(args)
        .start()
        .context("starting walcast")?;
    let result = (|| loop {
        if scrape(port, metric).unwrap_or(0.0) >= target as f64 {
            return Ok(started.elapsed().as_secs_f64());
        }
        if let Some(status) = child.exit_status() {
            bail!("walcast exited early: {status}");
        }
        if started.elapsed() > deadline {
            bail!("{metric} did not reach {target} within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    })();
    let rss = child.pid().map_or(0, peak_rss_kib);
    // SIGTERM (graceful), then SIGKILL if it does not exit within 30 s.
    child.terminate(Duration::from_secs(30));
    Ok((result?, rss))
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
