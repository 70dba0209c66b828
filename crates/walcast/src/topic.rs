//! `walcast topic`: create and read Kafka topics (for operators and data engineers).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use walcast_config::KafkaProperties;
use walcast_kafka::{ClientSettings, TopicAdmin, TopicSpec, TopicState};

#[derive(Debug, Args)]
pub struct TopicArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        global = true,
        env = "WALCAST_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    brokers: String,
    #[command(subcommand)]
    action: TopicAction,
}

#[derive(Debug, Subcommand)]
enum TopicAction {
    /// Create a topic if it does not exist; report a mismatch if it exists with other settings.
    Create {
        topic: String,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
    },
    /// Print records: partition, offset, key, headers and the pretty-printed value.
    Tail {
        topic: String,
        /// Start at the earliest retained offset instead of the end.
        #[arg(long)]
        from_beginning: bool,
        /// Keep waiting for new records (otherwise stop at the end of every partition).
        #[arg(long)]
        follow: bool,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<usize>,
    },
}

pub async fn run(args: TopicArgs) -> anyhow::Result<()> {
    match args.action {
        TopicAction::Create {
            topic,
            partitions,
            replication_factor,
        } => create(&args.brokers, &topic, partitions, replication_factor).await,
        TopicAction::Tail {
            topic,
            from_beginning,
            follow,
            limit,
        } => tail(&args.brokers, &topic, from_beginning, follow, limit).await,
    }
}

/// The same check the source runs at start-up: a topic that exists with another partition
/// count or replication factor is an error naming both and the fix.
async fn create(brokers: &str, topic: &str, partitions: i32, rf: i32) -> anyhow::Result<()> {
    let admin = TopicAdmin::new(ClientSettings::new(brokers, &KafkaProperties::default()))?;
    let spec = TopicSpec {
        partitions,
        replication_factor: rf,
    };
    match admin.ensure_topic(topic, spec, true).await? {
        TopicState::Created => {
            println!("created topic {topic} ({partitions} partitions, replication factor {rf})")
        }
        TopicState::Exists => println!("topic {topic} exists ({partitions} partitions)"),
    }
    Ok(())
}

async fn tail(
    brokers: &str,
    topic: &str,
    from_beginning: bool,
    follow: bool,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientSettings::new(brokers, &KafkaProperties::default())
        .config(&[
            // Reading never joins a group or commits offsets: tail must not disturb consumers.
            ("group.id", "walcast-topic-tail"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
        ])
        .create()?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read metadata of {topic} from {brokers}"))?;
    let partitions: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        bail!("topic {topic} does not exist on {brokers}; list topics or create it first");
    }
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let start = if from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        tpl.add_partition_offset(topic, *p, start)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end = std::collections::HashSet::new();
    let mut printed = 0usize;
    let mut stream = consumer.stream();
    while let Some(next) = stream.next().await {
        match next {
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if !follow && at_end.len() == partitions.len() {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
            Ok(msg) => {
                at_end.remove(&msg.partition());
                print_record(&msg);
                printed += 1;
                if limit.is_some_and(|l| printed >= l) {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn print_record(msg: &rdkafka::message::BorrowedMessage<'_>) {
    let key = msg.key().map(String::from_utf8_lossy).unwrap_or_default();
    println!(
        "partition {}  offset {}  key {}",
        msg.partition(),
        msg.offset(),
        key
    );
    if let Some(headers) = msg.headers() {
        for h in headers.iter() {
            let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
            println!("  {}: {}", h.key, v);
        }
    }
    let value = msg.payload().unwrap_or_default();
    let pretty = serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(value).into_owned());
    println!("{pretty}\n");
}
