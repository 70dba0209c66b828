#!/usr/bin/env bash
# Starts the whole local walcast system. Running it again starts only what is not running,
# so the same command brings back a crashed component; nothing else changes.
#
#   Postgres leader   127.0.0.1:$WALCAST_LEADER_PORT (5432)   databases catalog_write, catalog_read
#   replicas 1..3     127.0.0.1:5433, 5434, 5435              database catalog_read each
#   Apache Kafka      127.0.0.1:$WALCAST_KAFKA_PORT (19092)   topic catalog.events (3 partitions)
#   walcast source    admin 127.0.0.1:9464; sink admin 127.0.0.1:9465
#   catalog app       write API 127.0.0.1:3000, query API 127.0.0.1:4000
#
# State and logs live in .walcast/ (git-ignored). scripts/stop-system.sh stops everything.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--compose" ]; then
  exec docker compose -f "$WALCAST_ROOT/infra/docker-compose.yml" up -d --build
fi

"$WALCAST_ROOT/scripts/install-deps.sh"
if [ -n "${WALCAST_BIN:-}" ]; then
  WALCAST="$WALCAST_BIN"   # tests hand in the binary they already built
else
  log "building walcast (release)"
  (cd "$WALCAST_ROOT" && cargo build --release --locked -p walcast -q)
  WALCAST="$WALCAST_ROOT/target/release/walcast"
fi
mkdir -p "$STATE/pg" "$STATE/logs" "$STATE/run"

start_pg() { # NAME PORT
  local name="$1" port="$2" dir="$STATE/pg/$1"
  if pg_cluster_running "$name"; then log "postgres $name already running on $port"; return; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    log "initdb postgres $name"
    mkdir -p "$dir"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    {
      cat "$WALCAST_ROOT/infra/postgres/logical.conf"
      echo "listen_addresses = '127.0.0.1'"
      echo "port = $port"
      echo "unix_socket_directories = '$dir'"
    } >>"$dir/data/postgresql.conf"
  fi
  log "starting postgres $name on $port"
  # Commit timestamps let scripts/simulate-workflow.sh measure commit -> visible exactly.
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-c track_commit_timestamp=on" start >/dev/null
}

psql_at() { # PORT DB SQL
  "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -p "$1" -d "$2" -c "$3"
}

ensure_db() { # PORT DB
  if [ -z "$(psql_at "$1" postgres "SELECT 1 FROM pg_database WHERE datname = '$2'")" ]; then
    psql_at "$1" postgres "CREATE DATABASE $2" && log "created database $2 on $1"
  fi
}

start_kafka() {
  local dir="$STATE/kafka"
  if kafka_running; then log "kafka already running on $KAFKA_PORT"; return; fi
  local install; install="$("$WALCAST_ROOT/scripts/fetch-kafka.sh")"
  mkdir -p "$dir"
  sed -e "s|@NODE_ID@|1|; s|@HOST@|127.0.0.1|g; s|@PORT@|$KAFKA_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g; s|@LOG_DIRS@|$dir/data|" \
      "$WALCAST_ROOT/infra/kafka/server.properties.template" >"$dir/server.properties"
  local java_opts=(-Xmx"${WALCAST_KAFKA_HEAP:-512m}" -Xms128m -XX:+UseSerialGC
    -Dlog4j2.configurationFile="$WALCAST_ROOT/infra/kafka/log4j2.yaml" -cp "$install/libs/*")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local id; id="$(cat /proc/sys/kernel/random/uuid | tr -d - | cut -c1-22)"
    java "${java_opts[@]}" kafka.tools.StorageTool format --standalone -t "$id" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1
  fi
  log "starting kafka on $KAFKA_PORT"
  (exec setsid nohup java "${java_opts[@]}" kafka.Kafka "$dir/server.properties" \
    >>"$STATE/logs/kafka.log" 2>&1 </dev/null) &
  echo $! >"$dir/kafka.pid"
  wait_for "kafka" 90 port_open "$KAFKA_PORT"
}

start_pg leader "$LEADER_PORT"
for i in 1 2 3; do start_pg "replica-$i" "${REPLICA_PORTS[$((i - 1))]}"; done

ensure_db "$LEADER_PORT" catalog_write
ensure_db "$LEADER_PORT" catalog_read
"$WALCAST" schema apply write --dsn "host=127.0.0.1 port=$LEADER_PORT user=postgres dbname=catalog_write"
"$WALCAST" schema apply read --dsn "host=127.0.0.1 port=$LEADER_PORT user=postgres dbname=catalog_read"
for port in "${REPLICA_PORTS[@]}"; do
  ensure_db "$port" catalog_read
  "$WALCAST" schema apply read --dsn "host=127.0.0.1 port=$port user=postgres dbname=catalog_read"
done

start_kafka
# The broker accepts connections a moment before its controller can create topics.
wait_for "topic $TOPIC" 60 "$WALCAST" topic create "$TOPIC" --partitions 3 --brokers "127.0.0.1:$KAFKA_PORT"

http_ok() { curl -fsS -o /dev/null "$1" 2>/dev/null; }

start_service() { # NAME READY_URL ENV... -- ARGS...
  local name="$1" ready="$2"; shift 2
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  if service_running "$name"; then log "walcast $name already running"; return; fi
  log "starting walcast $name"
  # exec all the way down, so the pid file holds walcast's own pid, and no shell keeps the
  # caller's stdout open.
  (cd "$WALCAST_ROOT" && exec setsid nohup env "${envs[@]}" "$WALCAST" "$@" \
    >>"$STATE/logs/$name.log" 2>&1 </dev/null) &
  echo $! >"$STATE/run/$name.pid"
  wait_for "walcast $name ($ready)" 90 http_ok "$ready" || {
    tail -20 "$STATE/logs/$name.log" >&2; exit 1; }
}

leader_dsn="host=127.0.0.1 port=$LEADER_PORT user=postgres"
read_dsn() { echo "host=127.0.0.1 port=$1 user=postgres dbname=catalog_read"; }
brokers="127.0.0.1:$KAFKA_PORT"

start_service source "http://127.0.0.1:$SOURCE_ADMIN_PORT/ready" \
  "WALCAST_POSTGRES__DSN=$leader_dsn dbname=catalog_write" "WALCAST_KAFKA__BROKERS=$brokers" \
  "WALCAST_ADMIN__LISTEN=127.0.0.1:$SOURCE_ADMIN_PORT" \
  -- source --config connectors/catalog-outbox-source.toml
start_service sink "http://127.0.0.1:$SINK_ADMIN_PORT/ready" \
  "WALCAST_KAFKA__BROKERS=$brokers" "WALCAST_ADMIN__LISTEN=127.0.0.1:$SINK_ADMIN_PORT" \
  "WALCAST_TARGETS__CATALOG_READ__DSN=$(read_dsn "$LEADER_PORT")" \
  "WALCAST_TARGETS__REPLICA-1__DSN=$(read_dsn "${REPLICA_PORTS[0]}")" \
  "WALCAST_TARGETS__REPLICA-2__DSN=$(read_dsn "${REPLICA_PORTS[1]}")" \
  "WALCAST_TARGETS__REPLICA-3__DSN=$(read_dsn "${REPLICA_PORTS[2]}")" \
  -- sink --config connectors/catalog-read-sink.toml
start_service app "http://127.0.0.1:$WRITE_PORT/ready" \
  "WALCAST_APP_WRITE_DSN=$leader_dsn dbname=catalog_write" \
  "WALCAST_APP_READ_DSNS=$(read_dsn "${REPLICA_PORTS[0]}");$(read_dsn "${REPLICA_PORTS[1]}");$(read_dsn "${REPLICA_PORTS[2]}")" \
  "WALCAST_APP_WRITE_LISTEN=127.0.0.1:$WRITE_PORT" "WALCAST_APP_QUERY_LISTEN=127.0.0.1:$QUERY_PORT" \
  -- app

cat <<MSG

walcast is up (state and logs in $STATE):
  write DB     postgres://postgres@127.0.0.1:$LEADER_PORT/catalog_write
  read DB      postgres://postgres@127.0.0.1:$LEADER_PORT/catalog_read
  replicas     postgres://postgres@127.0.0.1:${REPLICA_PORTS[0]}/catalog_read  (:${REPLICA_PORTS[1]}, :${REPLICA_PORTS[2]})
  Kafka        127.0.0.1:$KAFKA_PORT   topic $TOPIC
  write API    http://127.0.0.1:$WRITE_PORT/products
  query API    http://127.0.0.1:$QUERY_PORT/products?q=
  source       http://127.0.0.1:$SOURCE_ADMIN_PORT/metrics   (/health, /ready)
  sink         http://127.0.0.1:$SINK_ADMIN_PORT/metrics   (/health, /ready)

Inspect the topic:   $WALCAST topic tail $TOPIC --from-beginning --brokers 127.0.0.1:$KAFKA_PORT
Stop everything:     scripts/stop-system.sh
MSG
