//! Retention: a target never consumes across records the topic no longer holds.
//!
//! Kafka deletes a topic's oldest records (`retention.ms`, `retention.bytes`, DeleteRecords);
//! a partition then starts at its first retained offset, its low watermark. Before a target
//! consumes (at start, after a reconnect or a restart, after a change of partitions) the
//! target loop compares where it would start each partition with the watermarks read after
//! its stored offsets:
//!
//! ```text
//!  stored next offset < low watermark   gap: offsets stored..=low-1 are gone
//!  stored next offset > high watermark  gap: the topic lost records the target applied
//!                                       (it was re-created)
//!  no stored offset, low watermark > 0  gap: offsets 0..=low-1 are gone, unless a completed
//!                                       snapshot began at or after the low watermark of
//!                                       every such partition (`snapshots::covering`)
//!  otherwise                            consume from the stored offset, else from the low
//!                                       watermark (assigned as a number: records deleted
//!                                       after this check are an out-of-range error, never
//!                                       skipped)
//! ```
//!
//! A gap stops that target alone (`pipeline.rs`): it consumes nothing, `/ready` names it and
//! why, `walcast_sink_target_gap` is 1, and an ERROR log names the partitions, the missing
//! offsets and the fixes, `walcast sink rebuild --target T --from <healthy target>`, or a new
//! snapshot (`walcast snapshot start`) followed by a plain rebuild. The check runs again every `metadata_refresh_secs`: offsets stored by
//! such a rebuild (in another process) end the stop. Nothing here resets or skips an offset;
//! a stored offset only moves with a batch or a rebuild.
//!
//! A snapshot covers only a partition without a stored offset: a target that stored an offset
//! applied the changes up to it; a snapshot would bring every row it lacks up to date, but
//! not remove the rows deleted in the hole.
//!
//! A plain `walcast sink rebuild` re-reads the topic from its start: it makes the check of a
//! target without stored offsets and refuses before emptying anything ([`refuse_rebuild`]).

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::info;
use walcast_kafka::snapshots;

use crate::config::SinkConfig;
use crate::error::{Error, Result};
use crate::kafka::Watermarks;

/// How long reading the snapshot progress topic may take.
const SNAPSHOTS_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a partition cannot be consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    /// The stored next offset is below the first retained offset.
    Behind { stored: i64, low: i64 },
    /// The stored next offset is past the end of the partition.
    Ahead { stored: i64, high: i64 },
    /// No stored offset, the partition no longer starts at 0 and no snapshot covers it.
    Start { low: i64 },
}

/// A partition a target cannot consume without missing records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    partition: i32,
    hole: Hole,
}

/// What the check found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Where to consume each partition: the stored offset, else the first retained offset.
    Consume(BTreeMap<i32, i64>),
    Gaps(Vec<Gap>),
}

/// Whether a target that stored `stored` can consume partitions with the `(low, high)`
/// watermarks `marks` without a gap (module docs); reads the snapshot progress topic only
/// when a partition without a stored offset no longer starts at 0.
pub(crate) async fn check(
    config: &SinkConfig,
    marks: &BTreeMap<i32, (i64, i64)>,
    stored: &BTreeMap<i32, i64>,
) -> Result<Verdict> {
    let fresh = uncovered_starts(marks, stored);
    let mut covered = fresh.is_empty();
    if !covered {
        let topic = config.snapshot_topic();
        let states = snapshots::read_all(config.kafka.client(), &topic, SNAPSHOTS_TIMEOUT).await?;
        if let Some(s) = snapshots::covering(&states, &config.kafka.topic, &fresh) {
            info!(snapshot = %s.id, progress_topic = %topic, starts = ?fresh, "partitions that no longer start at 0 are covered by a completed snapshot");
            covered = true;
        }
    }
    Ok(verdict(marks, stored, covered))
}

/// The first retained offset of each partition without a stored offset that no longer
/// starts at 0: what a snapshot must cover.
fn uncovered_starts(
    marks: &BTreeMap<i32, (i64, i64)>,
    stored: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, i64> {
    (marks.iter())
        .filter(|(p, (low, _))| *low > 0 && !stored.contains_key(p))
        .map(|(p, (low, _))| (*p, *low))
        .collect()
}

/// The check, given whether a snapshot covers [`uncovered_starts`].
fn verdict(
    marks: &BTreeMap<i32, (i64, i64)>,
    stored: &BTreeMap<i32, i64>,
    covered: bool,
) -> Verdict {
    let mut gaps = Vec::new();
    let mut starts = BTreeMap::new();
    for (&partition, &(low, high)) in marks {
        let hole = match stored.get(&partition).copied() {
            Some(stored) if stored < low => Some(Hole::Behind { stored, low }),
            Some(stored) if stored > high => Some(Hole::Ahead { stored, high }),
            Some(stored) => {
                starts.insert(partition, stored);
                None
            }
            None if low > 0 && !covered => Some(Hole::Start { low }),
            None => {
                starts.insert(partition, low);
                None
            }
        };
        gaps.extend(hole.map(|hole| Gap { partition, hole }));
    }
    if gaps.is_empty() {
        Verdict::Consume(starts)
    } else {
        Verdict::Gaps(gaps)
    }
}

/// The two ways out, spelled as commands.
fn fixes(target: &str) -> String {
    format!(
        "`walcast sink rebuild --target {target} --from <healthy target>` (copies a healthy \
         target), or a new source snapshot (`walcast snapshot start --config <source file>`) \
         and, once it has completed, `walcast sink rebuild --target {target}` (the topic is \
         complete again from the snapshot's start)"
    )
}

/// Why a running target stops, for the ERROR log and `/ready`: the fixes come before the
/// partitions, as `/ready` cuts a long reason.
pub(crate) fn stop_message(config: &SinkConfig, target: &str, gaps: &[Gap]) -> String {
    let progress = config.snapshot_topic();
    let partitions: Vec<String> = (gaps.iter())
        .map(|g| match g.hole {
            Hole::Behind { stored, low } => format!(
                "partition {}: offsets {stored} to {} are no longer on the topic (stored next \
                 offset {stored}, first retained offset {low})",
                g.partition,
                low - 1
            ),
            Hole::Ahead { stored, high } => format!(
                "partition {}: the target stored next offset {stored} but the partition ends \
                 at {high} (the topic was re-created or lost records)",
                g.partition
            ),
            Hole::Start { low } => format!(
                "partition {}: offsets 0 to {} are no longer on the topic, the target has no \
                 stored offset, and no completed snapshot on {progress} covers them",
                g.partition,
                low - 1
            ),
        })
        .collect();
    format!(
        "retention gap: {target} consumes nothing, as {} no longer holds records it needs \
         (nothing is skipped or reset); fix: {}; {}",
        config.kafka.topic,
        fixes(target),
        partitions.join("; ")
    )
}

/// Refuses a plain rebuild of `target` (re-reading the topic from its start) when a partition
/// no longer starts at 0 and no completed snapshot covers it: the rebuilt target would miss
/// what retention deleted. Run before anything is emptied.
pub(crate) async fn refuse_rebuild(config: &SinkConfig, target: &str) -> Result<()> {
    let watermarks = Watermarks::new(config)?;
    let marks = watermarks.fetch(&watermarks.partitions().await?).await?;
    let Verdict::Gaps(gaps) = check(config, &marks, &BTreeMap::new()).await? else {
        return Ok(());
    };
    let starts: Vec<String> = (gaps.iter())
        .filter_map(|g| match g.hole {
            Hole::Start { low } => {
                Some(format!("partition {} starts at offset {low}", g.partition))
            }
            Hole::Behind { .. } | Hole::Ahead { .. } => None,
        })
        .collect();
    Err(Error::Gap(format!(
        "refusing to rebuild {target} from the topic: {} no longer starts at offset 0 ({}) and \
         no completed snapshot on {} covers the deleted records, so the rebuilt target would \
         lack them; nothing was emptied. Rebuild it with {}",
        config.kafka.topic,
        starts.join(", "),
        config.snapshot_topic(),
        fixes(target)
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn map<V: Copy>(entries: &[(i32, V)]) -> BTreeMap<i32, V> {
        entries.iter().copied().collect()
    }

    #[test]
    fn stored_offsets_inside_the_watermarks_are_consumed_from() {
        let marks = map(&[(0, (0, 10)), (1, (5, 9)), (2, (0, 0))]);
        let stored = map(&[(0, 3), (1, 9)]);
        assert_eq!(uncovered_starts(&marks, &stored), BTreeMap::new());
        assert_eq!(
            verdict(&marks, &stored, false),
            Verdict::Consume(map(&[(0, 3), (1, 9), (2, 0)]))
        );
    }

    #[test]
    fn an_offset_below_retention_is_a_gap_that_no_snapshot_closes() {
        let marks = map(&[(0, (20, 30)), (1, (0, 5))]);
        let stored = map(&[(0, 12), (1, 7)]);
        let Verdict::Gaps(gaps) = verdict(&marks, &stored, true) else {
            panic!("expected gaps");
        };
        assert_eq!(
            gaps,
            vec![
                Gap {
                    partition: 0,
                    hole: Hole::Behind {
                        stored: 12,
                        low: 20
                    }
                },
                Gap {
                    partition: 1,
                    hole: Hole::Ahead { stored: 7, high: 5 }
                }
            ]
        );
    }

    #[test]
    fn a_missing_offset_on_a_truncated_partition_needs_a_snapshot() {
        let marks = map(&[(0, (0, 4)), (1, (8, 9))]);
        let stored = BTreeMap::new();
        assert_eq!(uncovered_starts(&marks, &stored), map(&[(1, 8)]));
        assert_eq!(
            verdict(&marks, &stored, false),
            Verdict::Gaps(vec![Gap {
                partition: 1,
                hole: Hole::Start { low: 8 }
            }])
        );
        assert_eq!(
            verdict(&marks, &stored, true),
            Verdict::Consume(map(&[(0, 0), (1, 8)]))
        );
    }

    #[test]
    fn the_stop_names_the_range_and_both_fixes_before_the_partitions() {
        let config =
            SinkConfig::load(&crate::projection::tests::shipped_path()).unwrap_or_else(|e| {
                panic!("{e}");
            });
        let gaps = [
            Gap {
                partition: 0,
                hole: Hole::Behind {
                    stored: 12,
                    low: 20,
                },
            },
            Gap {
                partition: 3,
                hole: Hole::Start { low: 7 },
            },
        ];
        let m = stop_message(&config, "replica-2", &gaps);
        for needle in [
            "replica-2 consumes nothing",
            "--target replica-2 --from <healthy target>",
            "walcast snapshot start",
            "partition 0: offsets 12 to 19 are no longer on the topic",
            "partition 3: offsets 0 to 6",
            "catalog.events.snapshots",
        ] {
            assert!(m.contains(needle), "{needle:?} in {m}");
        }
        assert!(
            m.find("walcast snapshot start") < m.find("partition 0"),
            "{m}"
        );
    }
}
