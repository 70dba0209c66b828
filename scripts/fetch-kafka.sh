#!/usr/bin/env bash
# Resolves the Apache Kafka broker pinned in infra/kafka/pom.xml from Maven Central into
# ${WALCAST_CACHE:-~/.cache/walcast}/kafka-<version>/libs, once per machine, and prints that
# kafka-<version> directory. Installs Java 17 and Maven with apt when they are missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pom="$here/infra/kafka/pom.xml"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
cache="${WALCAST_CACHE:-$HOME/.cache/walcast}"
dest="$cache/kafka-$version"

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ ! -f "$dest/.complete" ] && [ "${#need_apt[@]}" -gt 0 ]; then
  echo "fetch-kafka: installing ${need_apt[*]} with apt" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >&2
fi

mkdir -p "$cache"
exec 9>"$cache/.kafka-$version.lock"
flock 9
if [ ! -f "$dest/.complete" ]; then
  echo "fetch-kafka: resolving Apache Kafka $version from Maven Central (once per machine)" >&2
  rm -rf "$dest.partial"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$dest.partial/libs" >&2
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  touch "$dest/.complete"
fi
echo "$dest"
