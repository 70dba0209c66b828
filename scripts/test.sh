#!/usr/bin/env bash
# The test command of the README and CI: installs what is missing, then runs every test of the
# workspace against real PostgreSQL 15 clusters and a real Apache Kafka started by the test kit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
# Two cores: a wider build only thrashes, and tests each start their own Postgres clusters.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo test --workspace --locked --no-fail-fast "$@"
# Then the operator path itself (start-system -> simulate-workflow -> stop-system) with the
# binary just tested, unless only some tests were asked for.
if [ "$#" -eq 0 ]; then
  WALCAST_BIN="$PWD/target/debug/walcast" scripts/smoke-system.sh
fi
