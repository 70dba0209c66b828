//! The one DSN type: connection settings parsed from a libpq-style connection string.
//!
//! Both forms libpq accepts are understood:
//!
//! * key/value: `host=127.0.0.1 port=5432 user=walcast password='s3 cr3t' dbname=app sslmode=require`
//! * URL: `postgres://walcast:s3%20cr3t@127.0.0.1:5432/app?sslmode=require`
//!
//! A `host` starting with `/` is a Unix socket directory (the socket is
//! `<dir>/.s.PGSQL.<port>`). Unknown keys are rejected rather than ignored, so
//! a typo fails at startup instead of silently connecting without TLS.
//! Neither `Debug` nor `Display` ever prints the password.
//!
//! A [`Dsn`] is parsed once, when the connector file loads (`Deserialize`): a bad DSN is a
//! config error naming the key, before anything connects.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// How hard to insist on TLS; same meanings as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Ask for TLS; fall back to plain text if the server declines. No
    /// certificate checks (libpq's default).
    #[default]
    Prefer,
    /// Insist on TLS; check the chain only if `sslrootcert` is given.
    Require,
    /// Insist on TLS and check the certificate chain.
    VerifyCa,
    /// Insist on TLS, check the chain and that the certificate names the host.
    VerifyFull,
}

impl SslMode {
    /// Whether plain text is unacceptable.
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }

    /// The `sslmode` value as written in a DSN.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "sslmode '{other}' is not supported; use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address.
    Tcp(String),
    /// A directory holding the server's Unix socket.
    Unix(PathBuf),
}

/// Settings for one connection (replication or ordinary SQL).
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    host: Host,
    port: u16,
    user: String,
    password: Option<String>,
    dbname: String,
    ssl_mode: SslMode,
    ssl_root_cert: Option<PathBuf>,
    application_name: Option<String>,
    connect_timeout: Option<Duration>,
    options: Option<String>,
}

impl Dsn {
    /// Parses a key/value or URL DSN.
    pub fn parse(dsn: &str) -> Result<Dsn> {
        let dsn = dsn.trim();
        let pairs = if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
            parse_url(dsn)?
        } else {
            parse_key_values(dsn)?
        };
        let mut b = Builder::default();
        for (k, v) in pairs {
            b.set(&k, v)?;
        }
        b.finish()
    }

    /// Host or socket directory.
    pub fn host(&self) -> &Host {
        &self.host
    }
    /// TCP port, also the suffix of the Unix socket file name.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Role to log in as.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// Database to connect to.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }
    /// TLS mode.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }
    /// CA bundle used to verify the server certificate.
    pub fn ssl_root_cert(&self) -> Option<&Path> {
        self.ssl_root_cert.as_deref()
    }
    /// `application_name` reported to the server (shown in `pg_stat_replication`).
    pub fn application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }
    /// Limit on establishing the connection (TCP/TLS/auth).
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }
    /// Command-line options sent at startup (`-c name=value ...`).
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }
    /// The password, for the login only; never print it.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Same settings, another database.
    pub fn with_dbname(mut self, dbname: impl Into<String>) -> Self {
        self.dbname = dbname.into();
        self
    }
    /// Same settings, another `application_name`.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }
    /// Same settings, another limit on establishing the connection.
    pub fn with_connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = Some(limit);
        self
    }

    /// The Unix socket file, for a [`Host::Unix`].
    pub(crate) fn socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port))),
            Host::Tcp(_) => None,
        }
    }
}

impl FromStr for Dsn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Dsn::parse(s)
    }
}

/// A string parsed as a DSN; the error names the problem, never the password (the loader adds
/// the key and the file).
impl<'de> Deserialize<'de> for Dsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Dsn, D::Error> {
        let text = String::deserialize(d)?;
        Dsn::parse(&text).map_err(|e| match e {
            Error::Config(problem) => serde::de::Error::custom(format!("invalid DSN: {problem}")),
            other => serde::de::Error::custom(other),
        })
    }
}

/// Key/value form, password shown as `********`. Parses back (without the
/// password).
impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        };
        write!(
            f,
            "host={} port={} user={} dbname={} sslmode={}",
            quote(&host),
            self.port,
            quote(&self.user),
            quote(&self.dbname),
            self.ssl_mode.as_str()
        )?;
        if self.password.is_some() {
            f.write_str(" password=********")?;
        }
        if let Some(p) = &self.ssl_root_cert {
            write!(f, " sslrootcert={}", quote(&p.display().to_string()))?;
        }
        if let Some(a) = &self.application_name {
            write!(f, " application_name={}", quote(a))?;
        }
        if let Some(t) = self.connect_timeout {
            write!(f, " connect_timeout={}", t.as_secs())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dsn")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("dbname", &self.dbname)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("options", &self.options)
            .finish()
    }
}

fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\', '=']) {
        return v.to_owned();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[derive(Default)]
struct Builder {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    ssl_mode: Option<SslMode>,
    ssl_root_cert: Option<PathBuf>,
    application_name: Option<String>,
    connect_timeout: Option<Duration>,
    options: Option<String>,
}

impl Builder {
    fn set(&mut self, key: &str, value: String) -> Result<()> {
        match key {
            "host" => self.host = Some(value),
            "hostaddr" => self.host = Some(value),
            "port" => {
                let port = value.parse().map_err(|_| {
                    Error::Config(format!(
                        "port '{value}' is not a number between 1 and 65535"
                    ))
                })?;
                self.port = Some(port);
            }
            "user" => self.user = Some(value),
            "password" => self.password = Some(value),
            "dbname" => self.dbname = Some(value),
            "sslmode" => self.ssl_mode = Some(value.parse()?),
            "sslrootcert" => self.ssl_root_cert = Some(PathBuf::from(value)),
            "application_name" => self.application_name = Some(value),
            "options" => self.options = Some(value),
            "connect_timeout" => {
                let secs: u64 = value.parse().map_err(|_| {
                    Error::Config(format!(
                        "connect_timeout '{value}' is not a whole number of seconds"
                    ))
                })?;
                // libpq: 0 means wait forever.
                self.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            // The replication client sets this itself.
            "replication" => {}
            other => {
                return Err(Error::Config(format!(
                    "unknown connection option '{other}'; supported: host, hostaddr, port, user, password, dbname, sslmode, sslrootcert, application_name, connect_timeout, options"
                )));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Dsn> {
        let host = match self.host.as_deref() {
            None | Some("") => Host::Tcp("localhost".to_owned()),
            Some(h) if h.contains(',') => {
                return Err(Error::Config(format!(
                    "host '{h}' lists several hosts; give exactly one"
                )));
            }
            Some(h) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
            Some(h) => Host::Tcp(h.to_owned()),
        };
        let user = match self.user {
            Some(u) if !u.is_empty() => u,
            _ => std::env::var("USER").unwrap_or_else(|_| "postgres".to_owned()),
        };
        let dbname = match self.dbname {
            Some(d) if !d.is_empty() => d,
            _ => user.clone(),
        };
        Ok(Dsn {
            host,
            port: self.port.unwrap_or(5432),
            user,
            password: self.password,
            dbname,
            ssl_mode: self.ssl_mode.unwrap_or_default(),
            ssl_root_cert: self.ssl_root_cert,
            application_name: self.application_name,
            connect_timeout: self.connect_timeout,
            options: self.options,
        })
    }
}

/// `k=v k2='quoted \' value'` as libpq reads it.
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // The word may be the second half of an unquoted password with a space, so name
            // the key before it instead of echoing it.
            let after = match out.last() {
                Some((k, _)) => format!("the value of '{k}'"),
                None => "the start".to_owned(),
            };
            return Err(Error::Config(format!(
                "missing '=' after {after} in connection string; write key=value pairs separated by spaces and quote values with spaces (password='a b')"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(Error::Config(format!(
                            "unterminated quoted value for '{key}' in connection string"
                        )));
                    }
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// `postgres://user:pass@host:port/db?k=v`, percent-decoded.
fn parse_url(s: &str) -> Result<Vec<(String, String)>> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .unwrap_or(s);
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let mut out = Vec::new();
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            let (user, pass) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.push(("user".to_owned(), percent_decode(user)?));
            }
            if let Some(p) = pass {
                out.push(("password".to_owned(), percent_decode(p)?));
            }
            hp
        }
        None => authority,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| {
            Error::Config("unterminated IPv6 address in URL; write [addr]:port".to_owned())
        })?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if !host.is_empty() {
        out.push(("host".to_owned(), percent_decode(host)?));
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        out.push(("port".to_owned(), p.to_owned()));
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.push(("dbname".to_owned(), percent_decode(db)?));
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "URL parameter '{pair}' has no '='; write key=value"
            ))
        })?;
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    // Not echoed: the component may be the password.
                    Error::Config(
                        "invalid percent-encoding in the URL; write '%' followed by two hex digits (%25 for a literal %)"
                            .to_owned(),
                    )
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::Config("a URL component is not UTF-8 once percent-decoded".to_owned()))
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn cfg(s: &str) -> Dsn {
        match Dsn::parse(s) {
            Ok(c) => c,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn key_value_form() {
        let c = cfg(
            "host=db.example port=6432 user=walcast password='s3 cr\\'et' dbname=app sslmode=verify-full sslrootcert=/ca.pem application_name=wc connect_timeout=5",
        );
        assert_eq!(c.host(), &Host::Tcp("db.example".into()));
        assert_eq!(c.port(), 6432);
        assert_eq!(c.user(), "walcast");
        assert_eq!(c.password(), Some("s3 cr'et"));
        assert_eq!(c.dbname(), "app");
        assert_eq!(c.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(c.ssl_root_cert(), Some(Path::new("/ca.pem")));
        assert_eq!(c.application_name(), Some("wc"));
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn unix_socket_dir() {
        let c = cfg("host=/var/run/postgresql port=5433 user=postgres");
        assert_eq!(c.host(), &Host::Unix("/var/run/postgresql".into()));
        assert_eq!(
            c.socket_path(),
            Some(PathBuf::from("/var/run/postgresql/.s.PGSQL.5433"))
        );
        assert_eq!(c.dbname(), "postgres");
        assert_eq!(c.ssl_mode(), SslMode::Prefer);
    }

    #[test]
    fn url_form() {
        let c =
            cfg("postgres://walcast:p%40ss@127.0.0.1:5444/app?sslmode=require&application_name=x");
        assert_eq!(c.host(), &Host::Tcp("127.0.0.1".into()));
        assert_eq!(c.port(), 5444);
        assert_eq!(c.password(), Some("p@ss"));
        assert_eq!(c.dbname(), "app");
        assert_eq!(c.ssl_mode(), SslMode::Require);
        let c = cfg("postgresql:///app?host=%2Ftmp&port=5999&user=u");
        assert_eq!(c.host(), &Host::Unix("/tmp".into()));
        assert_eq!(c.port(), 5999);
        let c = cfg("postgres://u@[::1]:5000/d");
        assert_eq!(c.host(), &Host::Tcp("::1".into()));
        assert_eq!(c.port(), 5000);
    }

    #[test]
    fn never_prints_the_password() {
        for dsn in [
            "host=h user=u password=hunter2 dbname=d",
            "postgres://u:hunter2@h/d",
        ] {
            let c = cfg(dsn);
            assert!(!c.to_string().contains("hunter2"));
            assert!(!format!("{c:?}").contains("hunter2"));
            assert!(c.to_string().contains("password=********"));
        }
    }

    #[test]
    fn display_round_trips() {
        let c = cfg("host=h port=1 user='a b' dbname=d sslmode=disable application_name=x");
        assert_eq!(cfg(&c.to_string()), c);
    }

    #[test]
    fn rejects_bad_input() {
        for (dsn, needle) in [
            ("sslmode=always", "sslmode 'always'"),
            ("port=abc", "port 'abc'"),
            ("hots=x", "unknown connection option 'hots'"),
            ("host", "missing '='"),
            ("password=a b", "missing '=' after the value of 'password'"),
            ("postgres://u:se%zzret@h/d", "invalid percent-encoding"),
            ("password='open", "unterminated"),
            ("host=a,b", "several hosts"),
        ] {
            match Dsn::parse(dsn) {
                Ok(_) => panic!("{dsn} parsed"),
                Err(e) => assert!(e.to_string().contains(needle), "{dsn}: {e}"),
            }
        }
    }

    #[test]
    fn non_ascii_text_neither_panics_nor_leaks_the_password() {
        // The parser walks characters, never byte offsets, so multi-byte characters next to
        // '=', '@', ':', '?', a quote or whitespace are never split.
        for dsn in [
            "password='é\\€' host=ü",
            "password=\u{1F600}\u{2003}dbname=ß",
            "passwordé=x password=ü",
            "password='unterminated é",
            "postgres://ü:pä@ö/ß?password=é&x=ü",
            "postgres://üser@hö:5432",
            "\u{2003}password=é",
        ] {
            match Dsn::parse(dsn) {
                Ok(c) => {
                    let secret = c.password().unwrap_or("\0");
                    assert!(!c.to_string().contains(secret), "{dsn} -> {c}");
                    assert!(!format!("{c:?}").contains(secret), "{dsn} -> {c:?}");
                }
                Err(e) => {
                    for secret in ["é\\€", "pä", "password=é", "password=ü"] {
                        assert!(!e.to_string().contains(secret), "{dsn}: {e}");
                    }
                }
            }
        }
    }
}
