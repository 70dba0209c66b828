#!/usr/bin/env bash
# Installs what walcast needs to build, test and run locally, skipping what is already there:
# a C toolchain and OpenSSL headers (librdkafka is compiled from source by the rdkafka crate),
# PostgreSQL 15 server binaries, Java 17 and Maven (for the local Apache Kafka), and the
# Apache Kafka jars themselves (scripts/fetch-kafka.sh, once per machine).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || missing+=(build-essential)
have make || missing+=(make)
have cmake || missing+=(cmake)
have pkg-config || missing+=(pkg-config)
have curl || missing+=(curl)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
[ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
[ -x /usr/lib/postgresql/15/bin/initdb ] || [ -n "${WALCAST_PG_BIN:-}" ] || missing+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/pg_trgm.control ] || [ -n "${WALCAST_PG_BIN:-}" ] \
  || missing+=(postgresql-contrib-15)
have psql || missing+=(postgresql-client-15)
have java || missing+=(openjdk-17-jre-headless)
have mvn || missing+=(maven)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # Debian's postgresql-15 package creates and starts a default cluster; walcast never uses it.
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

if ! have cargo; then
  echo "install-deps: cargo is missing; install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi

"$here/scripts/fetch-kafka.sh" >/dev/null
