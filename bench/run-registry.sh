#!/usr/bin/env bash
# bench/run-registry.sh — pushing and pulling a ~200 MB multi-layer image, rbuild against
# `skopeo copy`, measured in the same run against the same loopback docker-registry: ONE table
# of medians with the ratio rbuild/skopeo (the registry issue's target: <= 1.0) and the machine.
#
# The image: busybox (testdata/base/make-busybox-rootfs.sh, built FROM scratch) plus LAYERS
# layers of LAYER_MB MB of incompressible random data each (COPY of files from /dev/urandom),
# built by rbuild (gzip layers, as built). skopeo's source is the same image exported by
# `rbuild build -o type=oci` (same blobs, same digests), unpacked into an OCI layout: skopeo reads
# `oci:DIR` from disk as rbuild reads its store.
#
# Method, REPS times each, interleaved (the order of the two tools alternates between reps):
#   push  the registry is stopped, its storage emptied and started again before every push (not
#         timed), so every push uploads every blob:
#           rbuild push 127.0.0.1:PORT/bench/big:rbuild
#           skopeo copy --dest-tls-verify=false oci:LAYOUT docker://127.0.0.1:PORT/bench/big:skopeo
#   pull  the image (pushed once by rbuild) into an empty destination every time (removed, not
#         timed):
#           rbuild --root EMPTY pull 127.0.0.1:PORT/bench/big:rbuild
#           skopeo copy --src-tls-verify=false docker://127.0.0.1:PORT/bench/big:rbuild oci:EMPTYDIR
# Wall clock around the command only ($EPOCHREALTIME, after a `sync`). Both tools with their
# defaults (rbuild: 3 blobs at once, 32 MiB upload chunks, every blob verified and fsynced into
# the store; skopeo: its default parallelism). The registry's files stay in the page cache
# between reps, for both tools alike.
#
# Usage: bench/run-registry.sh [-r REPS] [-l LAYERS] [-m LAYER_MB]
#   -r REPS      transfers per cell (default 5)
#   -l LAYERS    random-data layers (default 5)
#   -m LAYER_MB  MB per random layer (default 40)
# Env: RBUILD=path  use this binary (default: `cargo build --release -p rbuild-cli`, then
#                   target/release/rbuild; a private copy is used either way)
#      BENCH_WORK   work/results dir (default target/bench/registry)
# Output: the table on stdout and in $BENCH_WORK/results.md; every transfer in
#         $BENCH_WORK/runs.tsv; logs in $BENCH_WORK/logs/.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${BENCH_WORK:-$REPO/target/bench/registry}"
REPS=5
LAYERS=5
LAYER_MB=40
while [ $# -gt 0 ]; do
  case "$1" in
    -r) REPS="$2"; shift 2 ;;
    -l) LAYERS="$2"; shift 2 ;;
    -m) LAYER_MB="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for n in "$REPS" "$LAYERS" "$LAYER_MB"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "-r, -l and -m need positive numbers"
done
[ "$(id -u)" = 0 ] || die "run as root (rbuild builds mount overlayfs)"
for c in docker-registry skopeo python3 tar; do
  command -v "$c" >/dev/null || die "$c not installed (scripts/install-test-deps.sh installs them)"
done

mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
BIN="$WORK/bin"
mkdir -p "$BIN"
if [ -n "${RBUILD:-}" ]; then
  cp "$RBUILD" "$BIN/rbuild"
else
  log "building rbuild (release)"
  (cd "$REPO" && cargo build --release -q -p rbuild-cli)
  cp "$REPO/target/release/rbuild" "$BIN/rbuild"
fi
RB="$BIN/rbuild"

# --- the image ----------------------------------------------------------------------------
STORE="$WORK/store"
rm -rf "$STORE" "$WORK/rootfs" "$WORK/ctx" "$WORK/layout" "$WORK/big.oci.tar"
log "making the busybox rootfs and the base image"
"$REPO/testdata/base/make-busybox-rootfs.sh" "$WORK/rootfs" >"$WORK/logs/rootfs.log" 2>&1
printf 'FROM scratch\nCOPY . /\n' >"$WORK/base.Dockerfile"
"$RB" --root "$STORE" build -q -t bench/base -f "$WORK/base.Dockerfile" "$WORK/rootfs" >/dev/null
log "making $LAYERS layers of $LAYER_MB MB of random data"
mkdir -p "$WORK/ctx"
{
  echo "FROM bench/base"
  for i in $(seq 1 "$LAYERS"); do
    head -c "$((LAYER_MB * 1000 * 1000))" /dev/urandom >"$WORK/ctx/random-$i"
    echo "COPY random-$i /data/random-$i"
  done
} >"$WORK/ctx/Dockerfile"
"$RB" --root "$STORE" build -q -t bench/big "$WORK/ctx" >/dev/null
"$RB" --root "$STORE" build -q -t bench/big -o "type=oci,dest=$WORK/big.oci.tar" "$WORK/ctx" >/dev/null
mkdir -p "$WORK/layout"
tar -xf "$WORK/big.oci.tar" -C "$WORK/layout"
rm -f "$WORK/big.oci.tar"
IMAGE_BYTES=$(python3 - "$WORK/layout" <<'PY'
import json, sys, os
root = sys.argv[1]
index = json.load(open(os.path.join(root, "index.json")))
def blob(d):
    return os.path.join(root, "blobs", *d["digest"].split(":"))
m = json.load(open(blob(index["manifests"][0])))
print(m["config"]["size"] + sum(l["size"] for l in m["layers"]))
PY
)
IMAGE_LAYERS=$(($LAYERS + 1))
log "image: $IMAGE_LAYERS layers, $IMAGE_BYTES bytes"

# --- the registry -------------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOST="127.0.0.1:$PORT"
REG="$WORK/registry"
mkdir -p "$REG"
cat >"$REG/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG/storage
  delete:
    enabled: true
http:
  addr: $HOST
  secret: rbuild-bench-registry
EOF
REG_PID=""
stop_registry() {
  if [ -n "$REG_PID" ]; then
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
    REG_PID=""
  fi
}
start_registry() {
  docker-registry serve "$REG/config.yml" >>"$WORK/logs/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://$HOST/v2/', timeout=1)" 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  die "docker-registry did not start (see $WORK/logs/registry.log)"
}
fresh_registry() {
  stop_registry
  rm -rf "$REG/storage"
  start_registry
}
trap stop_registry EXIT

# --- measuring ----------------------------------------------------------------------------
RUNS="$WORK/runs.tsv"
printf 'op\ttool\trep\tseconds\n' >"$RUNS"
# timed OP TOOL REP CMD...: runs CMD, records its wall time; a failure stops the benchmark.
timed() {
  local op=$1 tool=$2 rep=$3
  shift 3
  sync
  local start=$EPOCHREALTIME
  if ! "$@" >"$WORK/logs/$op-$tool-$rep.log" 2>&1; then
    die "$op with $tool failed (rep $rep): see $WORK/logs/$op-$tool-$rep.log"
  fi
  local end=$EPOCHREALTIME
  local secs
  secs=$(python3 -c "print(f'{$end - $start:.3f}')")
  printf '%s\t%s\t%s\t%s\n' "$op" "$tool" "$rep" "$secs" >>"$RUNS"
  log "$op $tool rep $rep: ${secs}s"
}

"$RB" --root "$STORE" tag bench/big "$HOST/bench/big:rbuild"
push_rbuild() { timed push rbuild "$1" "$RB" --root "$STORE" push -q "$HOST/bench/big:rbuild"; }
push_skopeo() {
  timed push skopeo "$1" skopeo copy -q --dest-tls-verify=false \
    "oci:$WORK/layout" "docker://$HOST/bench/big:skopeo"
}
for rep in $(seq 1 "$REPS"); do
  if [ $((rep % 2)) = 1 ]; then order="rbuild skopeo"; else order="skopeo rbuild"; fi
  for tool in $order; do
    fresh_registry
    "push_$tool" "$rep"
  done
done

fresh_registry
"$RB" --root "$STORE" push -q "$HOST/bench/big:rbuild" >/dev/null
PULL_STORE="$WORK/pull-store"
PULL_LAYOUT="$WORK/pull-layout"
pull_rbuild() {
  rm -rf "$PULL_STORE"
  timed pull rbuild "$1" "$RB" --root "$PULL_STORE" pull -q "$HOST/bench/big:rbuild"
}
pull_skopeo() {
  rm -rf "$PULL_LAYOUT"
  timed pull skopeo "$1" skopeo copy -q --src-tls-verify=false \
    "docker://$HOST/bench/big:rbuild" "oci:$PULL_LAYOUT"
}
for rep in $(seq 1 "$REPS"); do
  if [ $((rep % 2)) = 1 ]; then order="rbuild skopeo"; else order="skopeo rbuild"; fi
  for tool in $order; do
    "pull_$tool" "$rep"
  done
done
stop_registry
rm -rf "$PULL_STORE" "$PULL_LAYOUT" "$REG/storage"

# --- the table ----------------------------------------------------------------------------
MACHINE="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), \
$(free -g | awk '/^Mem:/ {print $2}') GB RAM, kernel $(uname -r), $(df -T "$WORK" | awk 'NR==2 {print $2}') \
under $WORK, load average $(cut -d' ' -f1-3 /proc/loadavg)"
SKOPEO_VERSION=$(skopeo --version | awk '{print $3}')
REGISTRY_VERSION=$(docker-registry --version 2>/dev/null | awk '{print $3}')
python3 - "$RUNS" "$IMAGE_BYTES" "$IMAGE_LAYERS" "$REPS" "$MACHINE" "$SKOPEO_VERSION" \
  "$REGISTRY_VERSION" >"$WORK/results.md" <<'PY'
import csv, statistics, sys, datetime
runs, size, layers, reps, machine, skopeo, registry = sys.argv[1:8]
size = int(size)
times = {}
for row in csv.DictReader(open(runs), delimiter="\t"):
    times.setdefault((row["op"], row["tool"]), []).append(float(row["seconds"]))
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"# rbuild vs skopeo copy: push and pull of a {size / 1e6:.0f} MB, {layers}-layer image\n")
print(f"{now}; {machine}; skopeo {skopeo}, docker-registry {registry} on loopback (plain HTTP); "
      f"{reps} reps per cell, interleaved, medians.\n")
print("| op | rbuild median s (min–max) | skopeo median s (min–max) | rbuild MB/s | skopeo MB/s | rbuild/skopeo | target ≤ 1.0 |")
print("|---|---|---|---|---|---|---|")
for op in ("push", "pull"):
    r, s = times[(op, "rbuild")], times[(op, "skopeo")]
    rm, sm = statistics.median(r), statistics.median(s)
    ratio = rm / sm
    print(f"| {op} | {rm:.2f} ({min(r):.2f}–{max(r):.2f}) | {sm:.2f} ({min(s):.2f}–{max(s):.2f}) "
          f"| {size / 1e6 / rm:.0f} | {size / 1e6 / sm:.0f} | **{ratio:.2f}** | {'PASS' if ratio <= 1.0 else 'FAIL'} |")
PY
cat "$WORK/results.md"
log "table in $WORK/results.md, every transfer in $RUNS"
