//! Creating and checking topics: created once, then accepted as they are or refused with the
//! layout found and the fix.

use rdkafka::error::RDKafkaErrorCode;
use walcast_config::KafkaProperties;
use walcast_kafka::{ClientSettings, Error, TopicAdmin, TopicLayout, TopicSpec, TopicState};
use walcast_testkit::{Kafka, unique_name};

fn admin() -> TopicAdmin {
    let kafka = Kafka::shared().unwrap();
    TopicAdmin::new(ClientSettings::new(
        &kafka.bootstrap(),
        &KafkaProperties::default(),
    ))
    .unwrap()
}

fn spec(partitions: i32) -> TopicSpec {
    TopicSpec {
        partitions,
        replication_factor: 1,
    }
}

#[tokio::test]
async fn a_topic_is_created_once_and_another_layout_is_refused_with_the_fix() {
    let admin = admin();
    let topic = unique_name("admin_topic");
    let two = spec(2);

    assert_eq!(
        admin.ensure_topic(&topic, two, true).await.unwrap(),
        TopicState::Created
    );
    assert_eq!(
        admin.ensure_topic(&topic, two, true).await.unwrap(),
        TopicState::Exists
    );
    assert_eq!(
        admin.layout(&topic).await.unwrap(),
        TopicLayout {
            partitions: 2,
            replication_factor: 1
        }
    );
    assert!(admin.topic_names().await.unwrap().contains(&topic));
    assert!(admin.max_message_bytes(&topic).await.unwrap() > 0);
    // The lower-level request reports the broker's answer as it is.
    assert_eq!(
        admin.create(&topic, two).await.unwrap(),
        Err(RDKafkaErrorCode::TopicAlreadyExists)
    );

    let other = spec(3);
    match admin.ensure_topic(&topic, other, true).await {
        Err(Error::Topic { topic: t, problem }) => {
            assert_eq!(t, topic);
            assert!(
                problem.contains("exists with 2 partitions, not 3")
                    && problem.contains("set [kafka] partitions = 2"),
                "{problem}"
            );
        }
        other => panic!("expected a layout refusal, got {other:?}"),
    }
    // Not strict (dead-letter topics): accepted as it is.
    assert_eq!(
        admin.ensure_topic(&topic, other, false).await.unwrap(),
        TopicState::Exists
    );
}

#[tokio::test]
async fn a_missing_topic_is_named_with_the_fix() {
    let admin = admin();
    let topic = unique_name("admin_missing");
    match admin.check(&topic, spec(1), true).await {
        Err(Error::Topic { topic: t, problem }) => {
            assert_eq!(t, topic);
            assert!(problem.contains("walcast topic create"), "{problem}");
        }
        other => panic!("expected a missing topic, got {other:?}"),
    }
}
