#!/usr/bin/env bash
# Drives the running local system like a user would: creates products through the write API,
# changes prices, deactivates some, and shows each change arriving on the read DB and on every
# replica with its propagation delay: the commit of the sink's transaction on the target minus
# the commit of the write on the leader, both read from Postgres commit timestamps
# (track_commit_timestamp, as the latency bench measures), so curl, psql start-up and polling
# are not counted.
#
#   scripts/start-system.sh && scripts/simulate-workflow.sh [PRODUCTS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PRODUCTS="${1:-5}"
WRITE_API="http://127.0.0.1:${WALCAST_WRITE_PORT:-3000}"
QUERY_API="http://127.0.0.1:${WALCAST_QUERY_PORT:-4000}"
TIMEOUT_S="${WALCAST_SIMULATE_TIMEOUT:-30}"
TARGETS=("catalog_read:$LEADER_PORT" "replica-1:${REPLICA_PORTS[0]}" "replica-2:${REPLICA_PORTS[1]}" "replica-3:${REPLICA_PORTS[2]}")

now_ms() { date +%s%3N; }

json_field() { # FIELD: reads JSON on stdin
  python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# commit_ts PORT DB SQL: the commit time (epoch seconds) of the row SQL selects: its xmin.
commit_ts() {
  "$PG_BIN/psql" -X -At -h 127.0.0.1 -U postgres -p "$1" -d "$2" -c \
    "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM $3"
}

# wait_visible ID VERSION LABEL: waits until every target shows VERSION of product ID, then
# prints commit on the leader -> commit on each target.
wait_visible() {
  local id="$1" version="$2" label="$3" line="" failed=0 written
  written="$(commit_ts "$LEADER_PORT" catalog_write "products WHERE id = '$id'")"
  for target in "${TARGETS[@]}"; do
    local name="${target%%:*}" port="${target##*:}" deadline=$(( $(now_ms) + TIMEOUT_S * 1000 ))
    while :; do
      local v
      v="$("$PG_BIN/psql" -X -At -h 127.0.0.1 -U postgres -p "$port" -d catalog_read -c \
        "SELECT coalesce((SELECT version FROM catalog_product_read WHERE product_id = '$id'), -1)" 2>/dev/null || echo -2)"
      if [ "$v" = "$version" ]; then
        local applied
        applied="$(commit_ts "$port" catalog_read "catalog_product_read WHERE product_id = '$id'")"
        if [ -n "$written" ] && [ -n "$applied" ]; then
          line+="$(awk -v a="$applied" -v w="$written" -v n="$name" 'BEGIN { printf "  %s %5.0f ms", n, (a - w) * 1000 }')"
        else
          line+="  $name     ? ms"
        fi
        break
      fi
      if [ "$(now_ms)" -ge "$deadline" ]; then line+="  $name TIMEOUT"; failed=1; break; fi
      sleep 0.01
    done
  done
  printf '%-44s%s\n' "$label" "$line"
  return "$failed"
}

request() { # METHOD PATH [BODY]
  curl -sS -f -X "$1" "$WRITE_API$2" -H 'content-type: application/json' \
    -H "X-Correlation-Id: $(cat /proc/sys/kernel/random/uuid)" ${3:+-d "$3"}
}

echo "simulating $PRODUCTS products against $WRITE_API; commit on the leader -> commit on each target:"
for port in "$LEADER_PORT" "${REPLICA_PORTS[@]}"; do
  if [ "$("$PG_BIN/psql" -X -At -h 127.0.0.1 -U postgres -p "$port" -d postgres -c 'SHOW track_commit_timestamp')" != on ]; then
    echo "track_commit_timestamp is off on port $port: restart the system with scripts/start-system.sh (it turns it on) to see delays" >&2
  fi
done
failures=0
ids=()
for i in $(seq 1 "$PRODUCTS"); do
  sku="SIM-$(date +%s)-$i"
  body="$(request POST /products "{\"sku\":\"$sku\",\"name\":\"Simulated product $i\",\"description\":\"created by simulate-workflow\",\"price\":\"$((10 + i)).99\",\"currency\":\"EUR\"}")"
  id="$(json_field id <<<"$body")"; version="$(json_field version <<<"$body")"
  ids+=("$id")
  wait_visible "$id" "$version" "create $sku" || failures=$((failures + 1))
done
for i in "${!ids[@]}"; do
  id="${ids[$i]}"
  body="$(request PUT "/products/$id/price" "{\"price\":\"$((20 + i)).49\",\"currency\":\"EUR\"}")"
  wait_visible "$id" "$(json_field version <<<"$body")" "price change ${id: -12}" || failures=$((failures + 1))
done
for i in "${!ids[@]}"; do
  [ $((i % 2)) -eq 0 ] || continue
  id="${ids[$i]}"
  body="$(request POST "/products/$id/deactivate")"
  wait_visible "$id" "$(json_field version <<<"$body")" "deactivate ${id: -12}" || failures=$((failures + 1))
done

echo
echo "query API ($QUERY_API) for the first product:"
curl -sS -i "$QUERY_API/products/${ids[0]}" | sed -n '1p;/^[Xx]-[Ww]alcast/p;$p'
echo
if [ "$failures" -gt 0 ]; then
  echo "$failures change(s) did not reach every target within ${TIMEOUT_S}s" >&2
  exit 1
fi
echo "every change reached catalog_read and all three replicas"
