#!/usr/bin/env bash
# Starts the tutorial topology as local processes and keeps it running until interrupted:
#   three Prometheus servers   127.0.0.1:9091-9093   (cluster prometheus-node1..3, replica 0)
#   three sidecars             gRPC 127.0.0.1:19091-19093, HTTP 127.0.0.1:19191-19193
#   one querier                HTTP 127.0.0.1:29090, gRPC 127.0.0.1:29190
# Every Prometheus scrapes all three Prometheus servers and all three sidecars.
#
# Environment:
#   PORT_OFFSET  added to every port (default 0), to run beside another copy
#   DATA_DIR     where configurations, data and logs go (default: a new temporary folder)
#   GAUNTLET     the gauntlet binary (default: `gauntlet` on PATH, else this repo's target/)
#   PROMETHEUS   the prometheus binary (default: `prometheus` on PATH)
#
# The sidecars find their plugin next to the gauntlet binary or in the source tree's
# plugins/target/components (run scripts/build-plugins first), or in $GAUNTLET_PLUGIN_DIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
offset=${PORT_OFFSET:-0}
data=${DATA_DIR:-$(mktemp -d -t gauntlet-tutorial.XXXXXX)}
mkdir -p "$data"
if [ -z "${GAUNTLET:-}" ]; then
  if command -v gauntlet >/dev/null; then
    GAUNTLET=$(command -v gauntlet)
  else
    GAUNTLET="$repo/target/debug/gauntlet"
  fi
fi
PROMETHEUS=${PROMETHEUS:-prometheus}

port() { echo $(($1 + offset)); }

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM

prometheus_targets=""
sidecar_targets=""
for i in 1 2 3; do
  sep=${prometheus_targets:+, }
  prometheus_targets="$prometheus_targets$sep'127.0.0.1:$(port $((9090 + i)))'"
  sidecar_targets="$sidecar_targets$sep'127.0.0.1:$(port $((19190 + i)))'"
done
export PROMETHEUS_TARGETS=$prometheus_targets SIDECAR_TARGETS=$sidecar_targets

stores=()
for i in 1 2 3; do
  node="$data/node$i"
  mkdir -p "$node/data"
  cp "$here/prometheus.yml.tmpl" "$node/prometheus.yml.tmpl"
  # The first rendering, so that Prometheus can start; the sidecar keeps it up to date.
  CLUSTER="prometheus-node$i" REPLICA=0 \
    perl -pe 's/\$\(([A-Za-z0-9_]+)\)/exists $ENV{$1} ? $ENV{$1} : die "unset: $1\n"/ge' \
    "$node/prometheus.yml.tmpl" >"$node/prometheus.yml"
  "$PROMETHEUS" \
    --config.file="$node/prometheus.yml" \
    --storage.tsdb.path="$node/data" \
    --web.listen-address="127.0.0.1:$(port $((9090 + i)))" \
    --web.enable-lifecycle --web.enable-admin-api \
    >"$node/prometheus.log" 2>&1 &
  pids+=($!)
  CLUSTER="prometheus-node$i" REPLICA=0 "$GAUNTLET" sidecar \
    --prometheus.url="http://127.0.0.1:$(port $((9090 + i)))" \
    --grpc-address="127.0.0.1:$(port $((19090 + i)))" \
    --http-address="127.0.0.1:$(port $((19190 + i)))" \
    --reloader.config-file="$node/prometheus.yml.tmpl" \
    --reloader.config-envsubst-file="$node/prometheus.yml" \
    >"$node/sidecar.log" 2>&1 &
  pids+=($!)
  stores+=(--endpoint "127.0.0.1:$(port $((19090 + i)))")
done

"$GAUNTLET" query \
  --http-address="127.0.0.1:$(port 29090)" \
  --grpc-address="127.0.0.1:$(port 29190)" \
  --query.replica-label=replica \
  "${stores[@]}" \
  >"$data/querier.log" 2>&1 &
pids+=($!)

echo "tutorial running: querier http://127.0.0.1:$(port 29090)/ (data and logs in $data); Ctrl-C stops it"
wait
