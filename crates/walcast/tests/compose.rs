//! infra/docker-compose.yml cannot run here (no Docker engine), so this test checks what can
//! be checked without one: the services, their ports, health checks, build and mounts.

use std::path::PathBuf;

use serde_yaml::Value;

fn infra() -> PathBuf {
    walcast_testkit::repo_root().join("infra")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(infra().join("docker-compose.yml")).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).expect("valid YAML");
    doc.apply_merge().expect("YAML merge keys resolve");
    doc
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["services"]
        .get(name)
        .unwrap_or_else(|| panic!("service {name} missing"))
}

fn host_ports(svc: &Value) -> Vec<String> {
    svc["ports"]
        .as_sequence()
        .map(|s| s.iter().map(|p| p.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn every_part_of_the_system_is_a_service_with_its_port_and_health_check() {
    let doc = compose();
    let expected = [
        ("postgres-leader", "127.0.0.1:5432:5432"),
        ("replica-1", "127.0.0.1:5433:5432"),
        ("replica-2", "127.0.0.1:5434:5432"),
        ("replica-3", "127.0.0.1:5435:5432"),
        ("redpanda-1", "127.0.0.1:19092:19092"),
        ("console", "127.0.0.1:8080:8080"),
        ("source", "127.0.0.1:9464:9464"),
        ("sink", "127.0.0.1:9465:9465"),
        ("app", "127.0.0.1:3000:3000"),
    ];
    for (name, port) in expected {
        let svc = service(&doc, name);
        assert!(
            host_ports(svc).iter().any(|p| p == port),
            "{name} must publish {port}"
        );
        assert!(
            svc["healthcheck"]["test"].is_sequence(),
            "{name} needs a health check"
        );
        for p in host_ports(svc) {
            assert!(
                p.starts_with("127.0.0.1:"),
                "{name} publishes {p} beyond loopback"
            );
        }
    }
    assert!(
        host_ports(service(&doc, "app"))
            .iter()
            .any(|p| p == "127.0.0.1:4000:4000")
    );
    let leader_cmd = format!("{:?}", service(&doc, "postgres-leader")["command"]);
    assert!(
        leader_cmd.contains("config_file"),
        "leader must load the logical.conf"
    );
    let conf = std::fs::read_to_string(infra().join("compose/logical.conf")).unwrap();
    assert!(conf.contains("wal_level = logical"));
}

#[test]
fn the_ha_profile_adds_two_redpanda_nodes_and_replication_factor_three_is_settable() {
    let doc = compose();
    for name in ["redpanda-2", "redpanda-3"] {
        let profiles = format!("{:?}", service(&doc, name)["profiles"]);
        assert!(profiles.contains("ha"), "{name} belongs to the ha profile");
    }
    assert!(
        service(&doc, "redpanda-1")["profiles"].is_null(),
        "node 1 always runs"
    );
    let env = &service(&doc, "source")["environment"]["WALCAST_KAFKA__REPLICATION_FACTOR"];
    assert_eq!(env.as_str(), Some("${WALCAST_REPLICATION_FACTOR:-1}"));
}

#[test]
fn walcast_services_are_built_from_the_dockerfile_and_mount_files_that_exist() {
    let doc = compose();
    let services = doc["services"].as_mapping().unwrap();
    let mut walcast_services = 0;
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        if let Some(build) = svc.get("build") {
            walcast_services += 1;
            let context = infra().join(build["context"].as_str().unwrap());
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap());
            assert!(
                dockerfile.is_file(),
                "{name}: {} missing",
                dockerfile.display()
            );
        }
        for volume in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            let host = spec.split(':').next().unwrap();
            if host.starts_with('.') || host.starts_with('/') {
                let path = infra().join(host);
                assert!(path.exists(), "{name} mounts {host}, which does not exist");
            } else {
                assert!(
                    doc["volumes"].get(host).is_some(),
                    "{name}: named volume {host} undeclared"
                );
            }
        }
    }
    assert_eq!(
        walcast_services, 4,
        "schema, source, sink and app run the walcast image"
    );
    let dockerfile = std::fs::read_to_string(infra().join("Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "multi-stage: build + runtime");
    assert!(dockerfile.contains("bookworm-slim"), "small runtime image");
}

/// A service's `environment:` as (name, value) pairs.
fn environment(svc: &Value) -> Vec<(String, String)> {
    let vars = svc["environment"].as_mapping().cloned().unwrap_or_default();
    vars.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

/// The file a walcast service runs with: the shipped connector file, copied into the image.
fn shipped_connector(svc: &Value, dockerfile: &str) -> PathBuf {
    let command: Vec<&str> = svc["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let at = command.iter().position(|c| *c == "--config").unwrap() + 1;
    let in_image = command[at];
    let name = in_image
        .strip_prefix("/etc/walcast/connectors/")
        .unwrap_or_else(|| panic!("{in_image} is not a shipped connector file"));
    assert!(
        dockerfile.contains("COPY connectors /etc/walcast/connectors"),
        "the image carries the connector files"
    );
    walcast_testkit::repo_root().join("connectors").join(name)
}

#[test]
fn the_services_run_the_shipped_connector_files_with_container_overrides() {
    let doc = compose();
    let dockerfile = std::fs::read_to_string(infra().join("Dockerfile")).unwrap();
    let sink_svc = service(&doc, "sink");
    // A compose copy of the files drifts from the shipped ones: none is mounted.
    assert!(sink_svc["volumes"].is_null() && service(&doc, "source")["volumes"].is_null());
    let sink: walcast_sink::SinkConfig = walcast_config::load_with_vars(
        &shipped_connector(sink_svc, &dockerfile),
        environment(sink_svc),
    )
    .expect("the sink's file with its overrides loads");
    let dump = format!("{sink:?}");
    for host in [
        "postgres-leader",
        "replica-1",
        "replica-2",
        "replica-3",
        "redpanda-1:9092",
        "0.0.0.0:9465",
    ] {
        assert!(dump.contains(host), "sink config must point at {host}");
    }
    assert!(
        !dump.contains("127.0.0.1"),
        "no target left on the host's loopback: {dump}"
    );
    let source_svc = service(&doc, "source");
    let mut vars = environment(source_svc);
    // What the ha profile sets through ${WALCAST_REPLICATION_FACTOR:-1}.
    for (name, value) in &mut vars {
        if name == "WALCAST_KAFKA__REPLICATION_FACTOR" {
            *value = "3".to_owned();
        }
    }
    let source: walcast_source::SourceConfig =
        walcast_config::load_with_vars(&shipped_connector(source_svc, &dockerfile), vars)
            .expect("the source's file with its overrides loads");
    let dump = format!("{source:?}");
    for want in ["postgres-leader", "redpanda-1:9092", "0.0.0.0:9464"] {
        assert!(
            dump.contains(want),
            "source config must name {want}: {dump}"
        );
    }
    assert_eq!(source.kafka.replication_factor, 3);
    // The schema files the sink applies are where the image puts them.
    assert!(dockerfile.contains("COPY sql /etc/walcast/sql"));
    for file in &sink.schema.files {
        assert!(file.ends_with("../sql/read.sql"), "{}", file.display());
    }
}
