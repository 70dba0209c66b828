//! The partition-count guard. Adding partitions to a keyed topic moves keys: a key's later
//! events go to another partition while its earlier ones may still wait in the old one, and a
//! sink that consumed both at once would apply one aggregate's events out of order. So a
//! target records the topic's partition count when it first consumes it
//! (`walcast_topic_partitions`) and, when the topic has more:
//!
//! * if the new count is a multiple of the recorded one, a key either stays in its partition
//!   or moves to a *new* one (`hash % (k·n)` is below `n` exactly when it equals `hash % n`):
//!   the target keeps consuming the recorded partitions, which hold every key's events in
//!   order, and refuses the new ones;
//! * otherwise keys may move between the recorded partitions too, and the target consumes
//!   nothing.
//!
//! Either way the target is not ready, its error names the fix, and it checks again at every
//! metadata refresh: once an operator records the new count (after the old partitions were
//! drained, see docs/operations.md) or rebuilds the target, it consumes every partition.

use tokio_postgres::Client;

use crate::error::{Error, Result};

const LOAD: &str =
    "SELECT partitions FROM walcast_topic_partitions WHERE consumer_group = $1 AND topic = $2";
const RECORD: &str = "INSERT INTO walcast_topic_partitions (consumer_group, topic, partitions) \
     VALUES ($1, $2, $3) ON CONFLICT (consumer_group, topic) DO NOTHING";

/// What a target may consume of the topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Every partition.
    All,
    /// Only the partitions below `recorded`; the others are refused.
    Pinned { recorded: i32, now: i32 },
    /// Nothing.
    Stopped { recorded: i32, now: i32 },
}

/// The decision for a topic of `now` partitions (ids `0..now`) when `recorded` were recorded.
pub(crate) fn decide(recorded: i32, now: i32) -> Decision {
    if now == recorded {
        Decision::All
    } else if recorded > 0 && now > recorded && now % recorded == 0 {
        Decision::Pinned { recorded, now }
    } else {
        Decision::Stopped { recorded, now }
    }
}

/// Reads the recorded count (recording `now` when there is none yet) and decides.
pub(crate) async fn check(
    client: &Client,
    target: &str,
    group: &str,
    topic: &str,
    now: i32,
) -> Result<Decision> {
    let pg = |what: &str| Error::pg(target, what.to_owned());
    client
        .execute(RECORD, &[&group, &topic, &now])
        .await
        .map_err(pg("recording the partition count"))?;
    let recorded: i32 = client
        .query_one(LOAD, &[&group, &topic])
        .await
        .map_err(pg("reading walcast_topic_partitions"))?
        .get(0);
    Ok(decide(recorded, now))
}

/// The operator-facing text of a refusal: cause and fix.
pub(crate) fn refusal(target: &str, group: &str, topic: &str, d: &Decision) -> Option<String> {
    let record = |now: &i32| {
        format!(
            "record the new count on the target: UPDATE walcast_topic_partitions SET partitions \
             = {now} WHERE consumer_group = '{group}' AND topic = '{topic}'"
        )
    };
    let (recorded, now, what) = match d {
        Decision::All => return None,
        Decision::Pinned { recorded, now } => (
            recorded,
            now,
            format!(
                "it keeps consuming partitions 0..{} (each key's earlier events are there) and \
                 refuses partitions {recorded}..{now}. Fix: once its lag is 0 (every event \
                 written before the change applied), {}",
                recorded - 1,
                record(now)
            ),
        ),
        Decision::Stopped { recorded, now } => (
            recorded,
            now,
            format!(
                "keys may have moved between the partitions it consumed, so it consumes \
                 nothing. Fix: `walcast sink rebuild --target {target}`; or, if every event \
                 written before the change was applied before it, {}",
                record(now)
            ),
        ),
    };
    Some(format!(
        "topic {topic} has {now} partitions but target {target} recorded {recorded}: adding \
         partitions moves keys, and consuming old and new partitions together could apply an \
         aggregate's events out of order, so {what} (docs/operations.md, \"Adding partitions to \
         the topic\")"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_multiple_pins_the_recorded_partitions_and_anything_else_stops() {
        assert_eq!(decide(3, 3), Decision::All);
        assert_eq!(
            decide(3, 6),
            Decision::Pinned {
                recorded: 3,
                now: 6
            }
        );
        assert_eq!(
            decide(2, 8),
            Decision::Pinned {
                recorded: 2,
                now: 8
            }
        );
        assert_eq!(
            decide(3, 4),
            Decision::Stopped {
                recorded: 3,
                now: 4
            }
        );
        // Fewer than recorded: the topic was deleted and created again.
        assert_eq!(
            decide(4, 2),
            Decision::Stopped {
                recorded: 4,
                now: 2
            }
        );
        let text = refusal("r", "g", "t", &decide(2, 4)).unwrap();
        assert!(text.contains("refuses partitions 2..4"), "{text}");
        assert!(text.contains("SET partitions = 4"), "{text}");
        assert!(refusal("r", "g", "t", &Decision::All).is_none());
    }
}
