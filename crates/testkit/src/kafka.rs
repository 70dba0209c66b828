//! A real Apache Kafka broker (KRaft, single node) on free loopback ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use tempfile::TempDir;

use crate::ports::free_port;
use crate::process;
use crate::tls::ServerCerts;
use crate::{KitError, repo_root};

const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A running single-node Kafka. Dropping it kills the JVM and deletes its log directory.
#[derive(Debug)]
pub struct Kafka {
    dir: TempDir,
    install: PathBuf,
    port: u16,
    child: Option<Child>,
    secure: Option<SecureListener>,
}

/// The `SASL_SSL` listener of a broker started with [`Kafka::start_secure`].
#[derive(Debug, Clone)]
struct SecureListener {
    port: u16,
    ca: PathBuf,
    user: String,
    password: String,
}

/// The SCRAM mechanism of the secure listener.
const SCRAM: &str = "SCRAM-SHA-256";

impl Kafka {
    /// The broker shared by every test of this test binary, started on first use.
    ///
    /// Give each test its own topic and group names ([`crate::unique_name`]); never stop the
    /// shared broker (start a private one with [`Kafka::start`] for outage tests).
    pub fn shared() -> Result<&'static Kafka, KitError> {
        static SHARED: OnceLock<Result<Kafka, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Kafka::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| KitError::Kafka(format!("the shared broker failed to start: {e}")))
    }

    /// The secure broker ([`Kafka::start_secure`]) shared by every test of this test binary.
    pub fn shared_secure() -> Result<&'static Kafka, KitError> {
        static SHARED: OnceLock<Result<Kafka, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Kafka::start_secure().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| KitError::Kafka(format!("the shared secure broker failed to start: {e}")))
    }

    /// Starts a private broker (fetching Kafka from Maven Central first if this machine has
    /// never done so).
    pub fn start() -> Result<Kafka, KitError> {
        Kafka::start_with(false)
    }

    /// Starts a private broker with a second, `SASL_SSL` listener for clients: TLS with a
    /// throwaway CA ([`Kafka::ca_file`]) and SCRAM-SHA-256 for a user created when the storage
    /// is formatted. [`Kafka::secure_bootstrap`] and [`Kafka::secure_properties`] are what a
    /// client needs. The plaintext listener ([`Kafka::bootstrap`]) stays, for the kit and for
    /// tests that inspect topics; the controller listener stays plaintext too.
    pub fn start_secure() -> Result<Kafka, KitError> {
        Kafka::start_with(true)
    }

    fn start_with(secure: bool) -> Result<Kafka, KitError> {
        let install = installation()?;
        let dir = tempfile::Builder::new()
            .prefix("walcast-kafka-")
            .tempdir()
            .map_err(KitError::io(std::env::temp_dir()))?;
        process::claim_dir(dir.path())?;
        let port = free_port()?;
        let controller_port = free_port()?;
        let mut properties = render_properties(port, controller_port, &dir.path().join("logs"))?;
        let secure = if secure {
            let certs = ServerCerts::generate(dir.path())?;
            let listener = SecureListener {
                port: free_port()?,
                ca: certs.ca.clone(),
                user: "walcast".to_owned(),
                password: uuid::Uuid::new_v4().simple().to_string(),
            };
            properties = add_sasl_ssl_listener(&properties, listener.port, &certs);
            Some(listener)
        } else {
            None
        };
        let props_path = dir.path().join("server.properties");
        std::fs::write(&props_path, properties).map_err(KitError::io(&props_path))?;

        let cluster_id = uuid::Uuid::new_v4().simple().to_string();
        let mut format = java(&install);
        format
            .arg("kafka.tools.StorageTool")
            .args(["format", "--standalone", "-t", &cluster_id[..22], "-c"])
            .arg(&props_path);
        if let Some(l) = &secure {
            format
                .arg("--add-scram")
                .arg(format!("{SCRAM}=[name={},password={}]", l.user, l.password));
        }
        process::run(&mut format)?;

        let mut kafka = Kafka {
            dir,
            install,
            port,
            child: None,
            secure,
        };
        kafka.launch()?;
        Ok(kafka)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` of the `SASL_SSL` listener of a [`Kafka::start_secure`] broker.
    pub fn secure_bootstrap(&self) -> Option<String> {
        self.secure
            .as_ref()
            .map(|l| format!("127.0.0.1:{}", l.port))
    }

    /// The CA that signed the secure listener's certificate (PEM).
    pub fn ca_file(&self) -> Option<&Path> {
        self.secure.as_ref().map(|l| l.ca.as_path())
    }

    /// The librdkafka settings for the secure listener, the SCRAM password included:
    /// `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `ssl.ca.location`.
    pub fn secure_properties(&self) -> Option<Vec<(String, String)>> {
        let l = self.secure.as_ref()?;
        Some(
            [
                ("security.protocol", "SASL_SSL".to_owned()),
                ("sasl.mechanism", SCRAM.to_owned()),
                ("sasl.username", l.user.clone()),
                ("sasl.password", l.password.clone()),
                ("ssl.ca.location", l.ca.display().to_string()),
            ]
            .map(|(k, v)| (k.to_owned(), v))
            .to_vec(),
        )
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }

    /// Creates a topic and waits until every partition has a leader.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KitError> {
        self.create_topic_with(name, partitions, &[]).await
    }

    /// Like [`Kafka::create_topic`], with topic configs (`("max.message.bytes", "100000")`).
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), KitError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .map_err(|e| KitError::Kafka(format!("admin client: {e}")))?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .map_err(|e| KitError::Kafka(format!("create topic {name}: {e}")))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(KitError::Kafka(format!("create topic {t}: {code}"))),
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (bootstrap, topic) = (self.bootstrap(), name.to_owned());
            let led =
                tokio::task::spawn_blocking(move || partitions_with_leaders(&bootstrap, &topic))
                    .await
                    .unwrap_or(0);
            if led == partitions {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(KitError::Kafka(format!(
                    "topic {name}: {led} of {partitions} partitions got a leader within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9` of the broker JVM.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same ports and log directory.
    pub fn restart(&mut self) -> Result<(), KitError> {
        if let Some(mut child) = self.child.take() {
            process::stop_child(&mut child, libc::SIGTERM, Duration::from_secs(30));
        }
        self.launch()
    }

    fn launch(&mut self) -> Result<(), KitError> {
        let log = self.log_file();
        let mut cmd = java(&self.install);
        cmd.arg("kafka.Kafka")
            .arg(self.dir.path().join("server.properties"));
        let mut child = process::spawn_server(cmd, libc::SIGKILL, &log)?;
        let bootstrap = self.bootstrap();
        let ready = crate::wait_until("the broker", READY_TIMEOUT, || {
            matches!(child.try_wait(), Ok(None)) && broker_count(&bootstrap) == 1
        });
        if ready.is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(KitError::NotReady {
                what: format!("Kafka on port {}", self.port),
                seconds: READY_TIMEOUT.as_secs(),
                tail: process::log_tail(&log, 4000),
                log,
            });
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Kafka installation directory printed by `scripts/fetch-kafka.sh`, run once per process.
fn installation() -> Result<PathBuf, KitError> {
    static INSTALL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    INSTALL
        .get_or_init(|| {
            let script = repo_root().join("scripts/fetch-kafka.sh");
            let out = process::run(Command::new("bash").arg(&script)).map_err(|e| e.to_string())?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let dir = stdout.lines().last().unwrap_or_default().trim().to_owned();
            Ok(PathBuf::from(dir))
        })
        .clone()
        .map_err(KitError::Kafka)
}

fn java(install: &Path) -> Command {
    let java = std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin/java"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("java"));
    let heap = std::env::var("WALCAST_KAFKA_HEAP").unwrap_or_else(|_| "512m".into());
    let mut cmd = Command::new(java);
    cmd.arg(format!("-Xmx{heap}"))
        .args([
            "-Xms128m",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
        ])
        .arg("-Djava.awt.headless=true")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            repo_root().join("infra/kafka/log4j2.yaml").display()
        ))
        .arg("-cp")
        .arg(format!("{}/libs/*", install.display()));
    cmd
}

fn render_properties(port: u16, controller_port: u16, logs: &Path) -> Result<String, KitError> {
    let template_path = repo_root().join("infra/kafka/server.properties.template");
    let template = std::fs::read_to_string(&template_path).map_err(KitError::io(&template_path))?;
    Ok(template
        .replace("@NODE_ID@", "1")
        .replace("@HOST@", "127.0.0.1")
        .replace("@PORT@", &port.to_string())
        .replace("@CONTROLLER_PORT@", &controller_port.to_string())
        .replace("@LOG_DIRS@", &logs.display().to_string()))
}

/// Adds a `SASL_SSL` listener on `port` to rendered server properties: SCRAM-SHA-256 over TLS
/// with the PEM certificate chain and key given inline (Java's `\n` escapes keep them one line).
fn add_sasl_ssl_listener(properties: &str, port: u16, certs: &ServerCerts) -> String {
    let mut out = String::with_capacity(properties.len() + 4096);
    for line in properties.lines() {
        out.push_str(line);
        if line.starts_with("listeners=") || line.starts_with("advertised.listeners=") {
            out.push_str(&format!(",SASL_SSL://127.0.0.1:{port}"));
        } else if line.starts_with("listener.security.protocol.map=") {
            out.push_str(",SASL_SSL:SASL_SSL");
        }
        out.push('\n');
    }
    let one_line = |pem: &str| pem.trim_end().replace('\n', "\\n");
    out.push_str(&format!(
        "\n# SASL_SSL for clients (walcast test kit)\n\
         sasl.enabled.mechanisms={SCRAM}\n\
         listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=\
         org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
         listener.name.sasl_ssl.ssl.keystore.type=PEM\n\
         listener.name.sasl_ssl.ssl.keystore.certificate.chain={}\n\
         listener.name.sasl_ssl.ssl.keystore.key={}\n",
        one_line(&certs.chain_pem),
        one_line(&certs.key_pem)
    ));
    out
}

fn metadata_consumer(bootstrap: &str) -> Option<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "0")
        .create()
        .ok()
}

fn broker_count(bootstrap: &str) -> usize {
    metadata_consumer(bootstrap)
        .and_then(|c| c.fetch_metadata(None, Duration::from_secs(2)).ok())
        .map(|m| m.brokers().len())
        .unwrap_or(0)
}

fn partitions_with_leaders(bootstrap: &str, topic: &str) -> i32 {
    metadata_consumer(bootstrap)
        .and_then(|c| c.fetch_metadata(Some(topic), Duration::from_secs(2)).ok())
        .and_then(|m| {
            m.topics()
                .first()
                .map(|t| t.partitions().iter().filter(|p| p.leader() >= 0).count())
        })
        .unwrap_or(0) as i32
}
