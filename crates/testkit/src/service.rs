//! A binary under test (the `walcast` binary) run as a child process: started with arguments
//! and environment, stopped with `kill -9` or SIGTERM, its output read from a log file per
//! start, started again with the same arguments.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::{KitError, process};

/// A child process of a binary under test. Each start writes stdout and stderr to its own log
/// file in the log directory; the process never outlives the test binary (parent-death signal)
/// and is killed when the handle drops, also while a test panics.
///
/// ```no_run
/// # fn main() -> Result<(), walcast_testkit::KitError> {
/// # let dir = std::path::Path::new("/tmp");
/// use std::time::Duration;
/// let mut source = walcast_testkit::Service::new("source", "target/debug/walcast", dir)
///     .args(["source", "--config", "source.toml"])
///     .env("RUST_LOG", "info")
///     .start()?;
/// source.wait_for_log("source streaming", Duration::from_secs(90))?;
/// source.kill();
/// source.restart()?;
/// assert!(source.terminate(Duration::from_secs(30)).is_some_and(|s| s.success()));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Service {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    logs: PathBuf,
    admin_port: Option<u16>,
    child: Option<Child>,
    starts: u32,
}

impl Service {
    /// `program` named `name` (log files are `<logs>/<name>-<start>.log`); not started yet.
    pub fn new(name: &str, program: impl Into<PathBuf>, logs: &Path) -> Service {
        Service {
            name: name.to_owned(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            logs: logs.to_owned(),
            admin_port: None,
            child: None,
            starts: 0,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Service {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Service
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for every start.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Service {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A variable of the test's environment the child must not inherit.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Service {
        self.env_remove.push(key.into());
        self
    }

    /// The port of the process's admin endpoint (`/health`, `/ready`, `/metrics`), as its
    /// connector file sets it.
    pub fn with_admin_port(mut self, port: u16) -> Service {
        self.admin_port = Some(port);
        self
    }

    /// Starts it (the first time); see [`Service::restart`] for later starts.
    pub fn start(mut self) -> Result<Service, KitError> {
        self.restart()?;
        Ok(self)
    }

    /// Starts it again with the same arguments and a new log file; an error while it runs.
    pub fn restart(&mut self) -> Result<(), KitError> {
        if self.is_running() {
            return Err(KitError::Io {
                path: self.log_path(self.starts),
                source: std::io::Error::other(format!("{} is already running", self.name)),
            });
        }
        self.starts += 1;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        self.child = Some(process::spawn_server(
            cmd,
            libc::SIGKILL,
            &self.log_path(self.starts),
        )?);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    /// How often it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The process id while it runs (or until it is reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it was started and has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its exit status once it exited (on its own or stopped); `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// `kill -9`, as a crash or the OOM killer would do, and reaps it.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (the graceful path) and its exit status within `grace`; past `grace` it is
    /// killed with SIGKILL and the answer is `None`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        process::signal_pid(child.id(), libc::SIGTERM);
        let status = self.wait_exit(grace);
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// Waits for it to exit on its own; its exit status, or `None` if it still runs at `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        let _ = crate::wait_until("exit", limit, || {
            status = self.exit_status();
            status.is_some()
        });
        status
    }

    /// Waits until the current start's log contains `needle`; the error carries the log.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> Result<(), KitError> {
        crate::wait_until(&format!("{} logging {needle:?}", self.name), limit, || {
            self.log().contains(needle)
        })
        .map_err(|e| KitError::NotReady {
            what: e.to_string(),
            seconds: limit.as_secs(),
            log: self.log_path(self.starts),
            tail: self.log_tail(4000),
        })
    }

    /// The log file of start number `start` (1 is the first).
    pub fn log_path(&self, start: u32) -> PathBuf {
        self.logs.join(format!("{}-{start}.log", self.name))
    }

    /// What the current start wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    /// The last `bytes` bytes (at most) of the current start's log, cut at a character.
    pub fn log_tail(&self, bytes: usize) -> String {
        let text = self.log();
        let cut = text.len().saturating_sub(bytes);
        let cut = (cut..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[cut..].to_owned()
    }

    /// Every line it wrote, over all its starts.
    pub fn all_logs(&self) -> String {
        (1..=self.starts)
            .map(|s| std::fs::read_to_string(self.log_path(s)).unwrap_or_default())
            .collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
