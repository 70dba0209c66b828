# Shared by start-system.sh and stop-system.sh: where the local system lives and its ports.
# Every port can be overridden by the environment variable named beside it.
WALCAST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${WALCAST_STATE:-$WALCAST_ROOT/.walcast}"
PG_BIN="${WALCAST_PG_BIN:-/usr/lib/postgresql/15/bin}"
LEADER_PORT="${WALCAST_LEADER_PORT:-5432}"
REPLICA_PORTS=("${WALCAST_REPLICA1_PORT:-5433}" "${WALCAST_REPLICA2_PORT:-5434}" "${WALCAST_REPLICA3_PORT:-5435}")
KAFKA_PORT="${WALCAST_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${WALCAST_KAFKA_CONTROLLER_PORT:-19093}"
TOPIC="${WALCAST_TOPIC:-catalog.events}"
SOURCE_ADMIN_PORT="${WALCAST_SOURCE_ADMIN_PORT:-9464}"
SINK_ADMIN_PORT="${WALCAST_SINK_ADMIN_PORT:-9465}"
WRITE_PORT="${WALCAST_WRITE_PORT:-3000}"
QUERY_PORT="${WALCAST_QUERY_PORT:-4000}"
# The walcast services, in start order; each runs from a pid file under $STATE/run.
SERVICES=(source sink app)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Postgres refuses to run as root: run its server tools as the postgres user then.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_cluster_running NAME: true when the cluster under $STATE/pg/NAME is up.
pg_cluster_running() {
  [ -f "$STATE/pg/$1/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/$1/data" status >/dev/null 2>&1
}

kafka_running() {
  [ -f "$STATE/kafka/kafka.pid" ] && kill -0 "$(cat "$STATE/kafka/kafka.pid")" 2>/dev/null
}

service_running() { # NAME
  [ -f "$STATE/run/$1.pid" ] && kill -0 "$(cat "$STATE/run/$1.pid")" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for WHAT SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds or time is up.
wait_for() {
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then log "$what did not come up within ${seconds}s"; return 1; fi
    sleep 0.2
  done
}
