//! The `[kafka.properties]` security settings reach every client: with them an admin client
//! logs in over TLS and SASL; with a wrong password the error names the cause and the setting
//! to fix, and no client prints the password.

use std::collections::BTreeMap;

use walcast_config::KafkaProperties;
use walcast_kafka::{ClientSettings, Error, TopicAdmin, TopicSpec, TopicState};
use walcast_testkit::{Kafka, unique_name};

fn secure(kafka: &Kafka, password: Option<&str>) -> KafkaProperties {
    let mut p: BTreeMap<String, String> = kafka.secure_properties().unwrap().into_iter().collect();
    if let Some(password) = password {
        p.insert("sasl.password".into(), password.into());
    }
    KafkaProperties::from(p)
}

#[tokio::test]
async fn tls_and_sasl_settings_reach_the_admin_client() {
    let kafka = Kafka::shared_secure().unwrap();
    let brokers = kafka.secure_bootstrap().unwrap();
    let spec = TopicSpec {
        partitions: 1,
        replication_factor: 1,
    };

    let properties = secure(kafka, None);
    let admin = TopicAdmin::new(ClientSettings::new(&brokers, &properties)).unwrap();
    let topic = unique_name("secure_topic");
    assert_eq!(
        admin.ensure_topic(&topic, spec, true).await.unwrap(),
        TopicState::Created
    );

    let wrong = "not-the-password-7d1c";
    let properties = secure(kafka, Some(wrong));
    let settings = ClientSettings::new(&brokers, &properties);
    assert!(!format!("{settings:?}").contains(wrong));
    let admin = TopicAdmin::new(settings).unwrap();
    let topic = unique_name("secure_refused");
    match admin.ensure_topic(&topic, spec, true).await {
        Err(e @ Error::Kafka { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("check sasl.username, sasl.password and sasl.mechanism"),
                "{text}"
            );
            assert!(!text.contains(wrong), "{text}");
        }
        other => panic!("expected a refused login, got {other:?}"),
    }
}
