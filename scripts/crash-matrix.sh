#!/usr/bin/env bash
# The full crash matrix: 50,000 events written through the catalog write API and in SQL
# (transactions of 1-500 events, 4 concurrent writers) while the source, the sink, Kafka, a
# replica's Postgres and the leader Postgres are each killed with SIGKILL four times at random
# moments and brought back, and four times the source's replication connection is terminated
# while it publishes a transaction of up to 100,000 rows (WALCAST_CRASH_BIG_TX). Prints `fault | trials | events lost | wrong rows` and fails on any
# loss or wrong row. CI runs the reduced form (each fault twice, 5,000 events) in scripts/test.sh.
#
#   scripts/crash-matrix.sh                       # full form, release build (about 15 min)
#   WALCAST_CRASH_TRIALS=10 scripts/crash-matrix.sh
#   WALCAST_CRASH_SEED=<seed printed by a run> scripts/crash-matrix.sh   # replay its choices
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export WALCAST_CRASH_EVENTS="${WALCAST_CRASH_EVENTS:-50000}"
export WALCAST_CRASH_TRIALS="${WALCAST_CRASH_TRIALS:-4}"
export WALCAST_CRASH_RATE="${WALCAST_CRASH_RATE:-1000}"
export WALCAST_CRASH_BIG_TX="${WALCAST_CRASH_BIG_TX:-100000}"
exec cargo test --release --locked -p walcast --test main crash_matrix:: -- --nocapture
