//! What the benchmark programs share: reading a metric from an admin endpoint, a process's
//! peak RSS, medians and numbers from the environment.

use std::io::{Read, Write};
use std::net::TcpStream;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use walcast_testkit::Service;

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

/// One sample of `metric` from the admin endpoint (a minimal HTTP/1.1 GET).
pub fn scrape(port: u16, metric: &str) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .lines()
        .find(|l| l.starts_with(metric))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name} must be a number")),
        Err(_) => Ok(default),
    }
}
