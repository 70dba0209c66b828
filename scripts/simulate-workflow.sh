#!/usr/bin/env bash
# Drives the running local system like a user would: creates products through the write API,
# changes prices, deactivates some, and shows each change arriving on the read DB and on every
# replica with the measured propagation delay (commit acknowledged -> row visible).
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

# wait_visible ID VERSION LABEL T0: waits until every target shows VERSION of product ID.
wait_visible() {
  local id="$1" version="$2" label="$3" t0="$4" line="" failed=0
  for target in "${TARGETS[@]}"; do
    local name="${target%%:*}" port="${target##*:}" deadline=$(( $(now_ms) + TIMEOUT_S * 1000 ))
    while :; do
      local v
      v="$("$PG_BIN/psql" -X -At -h 127.0.0.1 -U postgres -p "$port" -d catalog_read -c \
        "SELECT coalesce((SELECT version FROM catalog_product_read WHERE product_id = '$id'), -1)" 2>/dev/null || echo -2)"
      if [ "$v" = "$version" ] || { [ "$version" = deleted ] && [ "$v" = -1 ]; }; then
        line+="$(printf '  %s %5d ms' "$name" $(( $(now_ms) - t0 )))"
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

echo "simulating $PRODUCTS products against $WRITE_API; visibility per target (commit -> visible):"
failures=0
ids=()
for i in $(seq 1 "$PRODUCTS"); do
  sku="SIM-$(date +%s)-$i"
  t0="$(now_ms)"
  body="$(request POST /products "{\"sku\":\"$sku\",\"name\":\"Simulated product $i\",\"description\":\"created by simulate-workflow\",\"price\":\"$((10 + i)).99\",\"currency\":\"EUR\"}")"
  id="$(json_field id <<<"$body")"; version="$(json_field version <<<"$body")"
  ids+=("$id")
  wait_visible "$id" "$version" "create $sku" "$t0" || failures=$((failures + 1))
done
for i in "${!ids[@]}"; do
  id="${ids[$i]}"; t0="$(now_ms)"
  body="$(request PUT "/products/$id/price" "{\"price\":\"$((20 + i)).49\",\"currency\":\"EUR\"}")"
  wait_visible "$id" "$(json_field version <<<"$body")" "price change ${id: -12}" "$t0" || failures=$((failures + 1))
done
for i in "${!ids[@]}"; do
  [ $((i % 2)) -eq 0 ] || continue
  id="${ids[$i]}"; t0="$(now_ms)"
  body="$(request POST "/products/$id/deactivate")"
  wait_visible "$id" "$(json_field version <<<"$body")" "deactivate ${id: -12}" "$t0" || failures=$((failures + 1))
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
