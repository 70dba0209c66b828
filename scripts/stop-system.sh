#!/usr/bin/env bash
# Stops everything scripts/start-system.sh started; data stays in .walcast/ for the next start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--compose" ]; then
  exec docker compose -f "$WALCAST_ROOT/infra/docker-compose.yml" down
fi

# Services first (SIGTERM: the source drains and confirms, the sink finishes its batch).
for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
  name="${SERVICES[$i]}"
  if service_running "$name"; then
    pid="$(cat "$STATE/run/$name.pid")"
    log "stopping walcast $name (pid $pid)"
    kill -TERM "$pid"
    wait_for "walcast $name shutdown" 60 bash -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/run/$name.pid"
done

if kafka_running; then
  pid="$(cat "$STATE/kafka/kafka.pid")"
  log "stopping kafka (pid $pid)"
  kill -TERM "$pid"
  wait_for "kafka shutdown" 60 bash -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$STATE/kafka/kafka.pid"

for name in leader replica-1 replica-2 replica-3; do
  if pg_cluster_running "$name"; then
    log "stopping postgres $name"
    as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/$name/data" -m fast -w stop >/dev/null
  fi
done
log "stopped"
