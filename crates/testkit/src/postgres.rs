//! Throwaway PostgreSQL 15 clusters on free loopback ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::{self, RunAs};
use crate::tls::ServerCerts;
use crate::{KitError, repo_root};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running PostgreSQL cluster. Dropping it stops Postgres and deletes its data directory.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    child: Option<Child>,
    tls: Option<TlsLogin>,
}

/// What a client needs for a cluster started with [`PostgresBuilder::tls_scram`].
#[derive(Debug, Clone)]
struct TlsLogin {
    ca: PathBuf,
    user: String,
    password: String,
}

/// Settings for [`Postgres`] beyond the defaults (`wal_level = logical`, trust on loopback).
#[derive(Debug, Default, Clone)]
pub struct PostgresBuilder {
    settings: Vec<(String, String)>,
    hba_lines: Vec<String>,
    port: Option<u16>,
    tls_scram: Option<(String, String)>,
}

impl PostgresBuilder {
    /// Adds a `postgresql.conf` setting; the value is written as given (quote strings yourself).
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a `pg_hba.conf` line ahead of the default trust lines, so it takes precedence.
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba_lines.push(line.to_owned());
        self
    }

    /// TCP only with TLS and SCRAM-SHA-256 passwords, as production should be.
    ///
    /// Generates a throwaway CA and a server certificate for 127.0.0.1 (key file mode 0600,
    /// owned by the server's OS user), turns `ssl` on, rejects every TCP connection without
    /// TLS (`hostnossl ... reject`) and asks for a SCRAM-SHA-256 password on every TLS one,
    /// replication included. `user` is created as a superuser with `password` once the cluster
    /// is up. [`Postgres::secure_dsn`] gives a `sslmode=verify-full` DSN for it and
    /// [`Postgres::ca_file`] the CA. The kit itself (and [`Postgres::dsn`]) uses the Unix
    /// socket, where `postgres` is still trusted.
    pub fn tls_scram(mut self, user: &str, password: &str) -> Self {
        self.tls_scram = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn start(self) -> Result<Postgres, KitError> {
        let bin = pg_bin()?;
        let run_as = RunAs::for_postgres()?;
        let dir = tempfile::Builder::new()
            .prefix("walcast-pg-")
            .tempdir()
            .map_err(KitError::io(std::env::temp_dir()))?;
        process::claim_dir(dir.path())?;
        if let Some(r) = run_as {
            r.chown(dir.path())?;
        }
        let data = dir.path().join("data");
        copy_template(&bin, run_as, &data)?;

        let port = match self.port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut conf = std::fs::read_to_string(repo_root().join("infra/postgres/logical.conf"))
            .map_err(KitError::io(
                repo_root().join("infra/postgres/logical.conf"),
            ))?;
        conf.push_str(&format!(
            "\n# walcast test kit\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{sock}'\n\
             # Throwaway clusters: survive process crashes (the page cache keeps the data), not OS crashes.\n\
             fsync = off\nfull_page_writes = off\n\
             wal_sender_timeout = '10s'\nmax_connections = 200\nshared_buffers = '64MB'\n\
             log_min_messages = warning\nlog_line_prefix = '%m [%p] %d '\n",
            sock = dir.path().display()
        ));
        let mut hba_lines = self.hba_lines.clone();
        let mut tls = None;
        if let Some((user, password)) = &self.tls_scram {
            let certs = ServerCerts::generate(dir.path())?;
            if let Some(r) = run_as {
                // Postgres refuses a key file that is not its own or readable by others.
                r.chown(&certs.key)?;
                r.chown(&certs.chain)?;
            }
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n\
                 password_encryption = 'scram-sha-256'\n",
                certs.chain.display(),
                certs.key.display()
            ));
            hba_lines.extend(
                [
                    "hostssl all all 127.0.0.1/32 scram-sha-256",
                    "hostssl replication all 127.0.0.1/32 scram-sha-256",
                    "hostnossl all all 0.0.0.0/0 reject",
                    "hostnossl replication all 0.0.0.0/0 reject",
                ]
                .map(str::to_owned),
            );
            tls = Some(TlsLogin {
                ca: certs.ca,
                user: user.clone(),
                password: password.clone(),
            });
        }
        for (k, v) in &self.settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        append(&data.join("postgresql.conf"), &conf)?;
        if !hba_lines.is_empty() {
            let hba_path = data.join("pg_hba.conf");
            let old = std::fs::read_to_string(&hba_path).map_err(KitError::io(&hba_path))?;
            let new = format!("{}\n{old}", hba_lines.join("\n"));
            std::fs::write(&hba_path, new).map_err(KitError::io(&hba_path))?;
        }

        let mut pg = Postgres {
            dir,
            bin,
            port,
            run_as,
            child: None,
            tls,
        };
        pg.launch()?;
        if let Some(t) = pg.tls.clone() {
            pg.psql(
                "postgres",
                &format!(
                    "CREATE ROLE \"{}\" LOGIN SUPERUSER PASSWORD '{}'",
                    t.user,
                    t.password.replace('\'', "''")
                ),
            )?;
        }
        Ok(pg)
    }
}

impl Postgres {
    /// Starts a cluster with the default settings.
    pub fn start() -> Result<Postgres, KitError> {
        PostgresBuilder::default().start()
    }

    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the cluster's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A libpq key=value connection string for `db` as the superuser `postgres` (trust auth):
    /// over TCP, or over the Unix socket for a [`tls_scram`](PostgresBuilder::tls_scram)
    /// cluster, whose TCP port wants TLS and a password.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.psql_host(),
            self.port
        )
    }

    /// For a [`tls_scram`](PostgresBuilder::tls_scram) cluster: a DSN for `db` as its password
    /// role over TLS, checking the certificate and host name (`sslmode=verify-full`).
    pub fn secure_dsn(&self, db: &str) -> Option<String> {
        let t = self.tls.as_ref()?;
        Some(format!(
            "host=127.0.0.1 port={} user={} password='{}' dbname={db} sslmode=verify-full sslrootcert={}",
            self.port,
            t.user,
            t.password.replace('\\', "\\\\").replace('\'', "\\'"),
            t.ca.display()
        ))
    }

    /// For a [`tls_scram`](PostgresBuilder::tls_scram) cluster: the CA that signed the
    /// server certificate (PEM), for `sslrootcert`.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// Where the kit's own `psql` connects: loopback TCP, or the socket when TCP needs TLS.
    fn psql_host(&self) -> String {
        match self.tls {
            Some(_) => self.dir.path().display().to_string(),
            None => "127.0.0.1".to_owned(),
        }
    }

    /// Runs SQL with `psql` and returns its unaligned, tuples-only output, trimmed.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, KitError> {
        let out = process::run(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    &self.psql_host(),
                ])
                .args([
                    "-U",
                    "postgres",
                    "-p",
                    &self.port.to_string(),
                    "-d",
                    db,
                    "-c",
                    sql,
                ]),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    pub fn create_database(&self, name: &str) -> Result<(), KitError> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(())
    }

    /// Fast shutdown (SIGINT): open transactions roll back, the cluster stops cleanly.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop_child(&mut child, libc::SIGINT, Duration::from_secs(30));
        }
    }

    /// `kill -9` of the postmaster, as a crash would do.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the cluster again on the same port and data (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)); crash recovery runs as it would in production.
    pub fn restart(&mut self) -> Result<(), KitError> {
        self.stop();
        self.launch()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn launch(&mut self) -> Result<(), KitError> {
        let log = self.log_file();
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        // After a kill -9 the old backends need a moment to notice and release shared memory;
        // until then a new postmaster exits at once, so start it again until one stays up.
        loop {
            let mut cmd = Command::new(self.bin.join("postgres"));
            cmd.arg("-D").arg(self.data_dir());
            if let Some(r) = self.run_as {
                r.apply(&mut cmd);
            }
            let mut child = process::spawn_server(cmd, libc::SIGQUIT, &log)?;
            let ready = crate::wait_until("Postgres", Duration::from_secs(15), || {
                matches!(child.try_wait(), Ok(None)) && self.accepts_connections()
            });
            if ready.is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            process::stop_child(&mut child, libc::SIGQUIT, Duration::from_secs(5));
            if std::time::Instant::now() >= deadline {
                return Err(KitError::NotReady {
                    what: format!("PostgreSQL on port {}", self.port),
                    seconds: READY_TIMEOUT.as_secs(),
                    tail: process::log_tail(&log, 4000),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn accepts_connections(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args([
                "-q",
                "-h",
                &self.psql_host(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: nothing of a throwaway cluster is worth a checkpoint.
            process::stop_child(&mut child, libc::SIGQUIT, Duration::from_secs(10));
        }
    }
}

/// The directory holding `initdb` and `postgres`: `$WALCAST_PG_BIN`, `pg_config --bindir`, or
/// Debian's PostgreSQL 15 location.
pub(crate) fn pg_bin() -> Result<PathBuf, KitError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("WALCAST_PG_BIN") {
        candidates.push(dir.into());
    }
    candidates.push("/usr/lib/postgresql/15/bin".into());
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
    }
    candidates
        .iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        .cloned()
        .ok_or_else(|| KitError::NoPostgres {
            looked: candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// `initdb` runs once per process into a template; each cluster gets a copy (about 10× faster
/// than a fresh initdb, which matters for tests that start five clusters).
fn copy_template(bin: &Path, run_as: Option<RunAs>, dest: &Path) -> Result<(), KitError> {
    static TEMPLATE: OnceLock<Result<TempDir, String>> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("walcast-pg-template-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        process::claim_dir(dir.path()).map_err(|e| e.to_string())?;
        if let Some(r) = run_as {
            r.chown(dir.path()).map_err(|e| e.to_string())?;
        }
        let mut cmd = Command::new(bin.join("initdb"));
        cmd.arg("-D").arg(dir.path().join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        if let Some(r) = run_as {
            r.apply(&mut cmd);
        }
        process::run(&mut cmd).map_err(|e| e.to_string())?;
        Ok(dir)
    });
    let template = template.as_ref().map_err(|e| KitError::Command {
        command: "initdb".into(),
        status: "failed".into(),
        output: e.clone(),
    })?;
    process::run(
        Command::new("cp")
            .arg("-a")
            .arg(template.path().join("data"))
            .arg(dest),
    )?;
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<(), KitError> {
    use std::io::Write;
    let mut f = std::fs::File::options()
        .append(true)
        .open(path)
        .map_err(KitError::io(path))?;
    f.write_all(text.as_bytes()).map_err(KitError::io(path))
}
