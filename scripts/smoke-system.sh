#!/usr/bin/env bash
# The operator path end to end, as CI runs it: start-system.sh, simulate-workflow.sh,
# stop-system.sh, on ports and a state directory of its own (so it never touches a system you
# run on the default ports), then checks that no process was left behind.
# WALCAST_BIN selects the binary (scripts/test.sh passes the debug build it just tested).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WALCAST_STATE="${WALCAST_SMOKE_STATE:-$here/target/walcast-smoke}"
export WALCAST_LEADER_PORT=25432 WALCAST_REPLICA1_PORT=25433 WALCAST_REPLICA2_PORT=25434
export WALCAST_REPLICA3_PORT=25435 WALCAST_KAFKA_PORT=29092 WALCAST_KAFKA_CONTROLLER_PORT=29093
export WALCAST_SOURCE_ADMIN_PORT=29464 WALCAST_SINK_ADMIN_PORT=29465
export WALCAST_WRITE_PORT=23000 WALCAST_QUERY_PORT=24000

rm -rf "$WALCAST_STATE"
mkdir -p "$WALCAST_STATE" && chmod 755 "$WALCAST_STATE"
trap '"$here/scripts/stop-system.sh" >/dev/null 2>&1 || true' EXIT

"$here/scripts/start-system.sh"
"$here/scripts/simulate-workflow.sh" 3
"$here/scripts/stop-system.sh"
trap - EXIT

left="$(pgrep -f "$WALCAST_STATE" || true)"
if [ -n "$left" ]; then
  echo "processes left behind: $left" >&2
  echo "smoke: 0 passed, 1 failed"
  exit 1
fi
rm -rf "$WALCAST_STATE"
echo "smoke: 1 passed, 0 failed"
