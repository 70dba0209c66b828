//! Reading what the source produced, and Kafka's partitioner for checking it.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::ok;

/// One record as read back.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
    pub timestamp: Option<i64>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn id(&self) -> &str {
        self.header("id").unwrap_or("")
    }

    pub fn value_text(&self) -> &str {
        self.value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or("")
    }
}

/// Reads every partition of a topic from the beginning. Blocking: call it from
/// `tokio::task::block_in_place` or a blocking task.
pub struct TopicReader {
    consumer: BaseConsumer,
    brokers: String,
    topic: String,
    partitions: i32,
    pub records: Vec<Received>,
    ids: HashSet<String>,
}

impl TopicReader {
    /// Waits (up to 60 s) for the topic to exist, then assigns all its partitions.
    pub fn new(brokers: &str, topic: &str) -> TopicReader {
        let consumer: BaseConsumer = ok(ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("{topic}.reader"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .set("log_level", "3")
            .create());
        let deadline = Instant::now() + Duration::from_secs(60);
        let partitions = loop {
            let n = partition_count(&consumer, topic);
            if n > 0 {
                break n;
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} did not appear within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            ok(tpl.add_partition_offset(topic, p, Offset::Beginning));
        }
        ok(consumer.assign(&tpl));
        TopicReader {
            consumer,
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            partitions,
            records: Vec::new(),
            ids: HashSet::new(),
        }
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Polls until `cond(records)` holds or `limit` passes; returns whether it held.
    /// `cond` is checked after each batch of what is available, not after every record.
    pub fn poll_until(&mut self, limit: Duration, cond: impl Fn(&[Received]) -> bool) -> bool {
        self.poll_until_with(limit, |reader| cond(&reader.records))
    }

    /// Polls until `n` distinct `id` headers were read.
    pub fn until_ids(&mut self, n: usize, limit: Duration) -> bool {
        self.poll_until_with(limit, |reader| reader.ids.len() >= n)
    }

    /// Distinct `id` headers read so far.
    pub fn distinct(&self) -> usize {
        self.ids.len()
    }

    fn poll_until_with(&mut self, limit: Duration, cond: impl Fn(&TopicReader) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let mut n = 0;
            while n < 10_000 && self.poll_once(Duration::from_millis(if n == 0 { 100 } else { 0 }))
            {
                n += 1;
            }
        }
    }

    /// Reads up to the current end of every partition (so duplicates produced so far are
    /// seen too).
    pub fn read_to_end(&mut self, limit: Duration) {
        let ends = high_watermarks(&self.brokers, &self.topic, self.partitions);
        let reached = self.poll_until(limit, |rs| {
            let mut top = vec![-1i64; ends.len()];
            for r in rs {
                let p = r.partition as usize;
                top[p] = top[p].max(r.offset);
            }
            (0..ends.len()).all(|p| top[p] + 1 >= ends[p])
        });
        assert!(
            reached,
            "did not reach the end offsets {ends:?} of {}",
            self.topic
        );
    }

    /// One record, if one arrives within `timeout`.
    fn poll_once(&mut self, timeout: Duration) -> bool {
        match self.consumer.poll(timeout) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let received = Received {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                    timestamp: m.timestamp().to_millis(),
                };
                self.ids.insert(received.id().to_owned());
                self.records.push(received);
                true
            }
            Some(Err(e)) => panic!("consuming {}: {e}", self.topic),
            None => false,
        }
    }
}

pub fn distinct_ids(records: &[Received]) -> usize {
    records
        .iter()
        .map(Received::id)
        .collect::<HashSet<_>>()
        .len()
}

fn partition_count(consumer: &BaseConsumer, topic: &str) -> i32 {
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()
        .and_then(|md| md.topics().first().map(|t| t.partitions().len() as i32))
        .unwrap_or(0)
}

/// The high watermark of each partition.
pub fn high_watermarks(brokers: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create());
    (0..partitions)
        .map(|p| ok(consumer.fetch_watermarks(topic, p, Duration::from_secs(10))).1)
        .collect()
}

/// Kafka's Java client partitioner: `toPositive(murmur2(key)) % partitions`.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) as i32 % partitions
}

/// MurmurHash2 exactly as `org.apache.kafka.common.utils.Utils.murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if rest.len() == 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[test]
fn murmur2_matches_the_java_client() {
    // Values from Kafka's UtilsTest.testMurmur2.
    let cases: [(&[u8], i32); 3] = [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
    ];
    for (key, expected) in cases {
        assert_eq!(
            murmur2(key) as i32,
            expected,
            "{}",
            String::from_utf8_lossy(key)
        );
    }
}
