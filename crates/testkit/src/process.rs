//! Child processes that never outlive the test binary.
//!
//! Linux delivers a parent-death signal (`PR_SET_PDEATHSIG`) when the *thread* that forked a
//! child exits, not the process. Tests run on short-lived threads while a shared broker must
//! live as long as the binary, so every child is forked from one spawner thread that lives
//! until the process ends: the signal then fires exactly when the test binary dies, however it
//! dies.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::KitError;

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The OS user a server process runs as: ourselves, or `postgres` when we are root.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl RunAs {
    /// `None` when we are not root and run servers as ourselves.
    pub(crate) fn for_postgres() -> Result<Option<RunAs>, KitError> {
        let me = std::fs::metadata("/proc/self").map_err(KitError::io("/proc/self"))?;
        if me.uid() != 0 {
            return Ok(None);
        }
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(KitError::io("/etc/passwd"))?;
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == "postgres")
            .and_then(|f| {
                Some(RunAs {
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })
            .map(Some)
            .ok_or(KitError::NoPostgresUser)
    }

    pub(crate) fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    pub(crate) fn chown(&self, path: &Path) -> Result<(), KitError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(KitError::io(path))
    }
}

/// Starts `cmd` from the long-lived spawner thread with `death_signal` as its parent-death
/// signal, its stdout and stderr appended to `log`.
pub(crate) fn spawn_server(
    mut cmd: Command,
    death_signal: i32,
    log: &Path,
) -> Result<Child, KitError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(KitError::io(log))?;
    let err = out.try_clone().map_err(KitError::io(log))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    set_death_signal(&mut cmd, death_signal);
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = spawner()
        .lock()
        .map_err(|_| spawner_gone())?
        .send((cmd, reply_tx));
    sent.map_err(|_| spawner_gone())?;
    reply_rx
        .recv()
        .map_err(|_| spawner_gone())?
        .map_err(|source| KitError::Spawn { program, source })
}

fn spawner_gone() -> KitError {
    KitError::Io {
        path: "spawner thread".into(),
        source: io::Error::other("spawner thread exited"),
    }
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let spawned = std::thread::Builder::new()
            .name("walcast-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static, so this loop ends only with the process.
                loop {
                    std::thread::park();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the testkit spawner thread");
        }
        Mutex::new(tx)
    })
}

#[allow(unsafe_code)]
fn set_death_signal(cmd: &mut Command, signal: i32) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: runs in the forked child before exec; prctl and getppid are async-signal-safe and
    // touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Runs a short command to completion; a non-zero exit is an error carrying its output.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, KitError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let rendered = format!("{cmd:?}");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| KitError::Spawn { program, source })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(KitError::Command {
            command: rendered,
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// Sends `signal` to `child` and reaps it, waiting at most `grace` before escalating to SIGKILL.
pub(crate) fn stop_child(child: &mut Child, signal: i32, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal_pid(child.id(), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[allow(unsafe_code)]
pub(crate) fn signal_pid(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The last `max` bytes of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

/// Marks a kit directory as owned by this process, first removing directories left behind by
/// test binaries that died (statics such as the shared broker are never dropped).
pub(crate) fn claim_dir(dir: &Path) -> Result<(), KitError> {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| sweep_stale(&std::env::temp_dir()));
    let marker = dir.join("owner.pid");
    std::fs::write(&marker, std::process::id().to_string()).map_err(KitError::io(marker))
}

fn sweep_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_kit = entry.file_name().to_string_lossy().starts_with("walcast-");
        let Ok(owner) = std::fs::read_to_string(path.join("owner.pid")) else {
            continue;
        };
        let alive = Path::new("/proc").join(owner.trim()).exists();
        if is_kit && !alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
