#!/usr/bin/env bash
# bench/run-shared-peers.sh — rbuild (and BuildKit, in the same session) on the workloads of the
# shared peer benchmark ../shared/bench (README there), without writing into ../shared.
#
# What it sets up, all under $BENCH_WORK (default target/bench/shared):
#   workloads/   a copy of ../shared/bench/workloads (gen.sh makes the big contexts inside it);
#                the only change: `FROM busybox` reads `FROM $BASE_REF`, an image this script
#                owns in both engines (dockerd's busybox:latest is shared with other tools)
#   base image   the harness's own busybox rootfs (make_busybox_tar, taken from
#                ../shared/bench/setup.sh), `docker import`ed with setup.sh's --change flags,
#                written as an OCI image layout with skopeo as setup.sh does (images/busybox),
#                tarred and `rbuild load`ed: both engines get the same layer bytes and config
#   rbuild       its store in rbuild-store/; "cold" (RBUILD_PRUNE) = a fresh copy of a store
#                holding only the base image; sizes from `rbuild save`, layers from `inspect`
#   state/, results/   the harness's STATE_DIR and RESULTS_DIR (results-peers.md/.json there)
# then runs ../shared/bench/run-peers.sh with those settings. rbuild has no build cache yet:
# its no-op and change rows are full rebuilds.
#
# Usage: bench/run-shared-peers.sh [-p buildkit,rbuild] [-w simple,many-layers,...] [-r RUNS]
#                                  [-s "cold noop change"]
# Env: RBUILD (default: cargo build --release, target/release/rbuild), BENCH_WORK,
#      SHARED_BENCH (default ../shared/bench beside the repo), DOCKER (default /usr/bin/docker).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED_BENCH:-$(cd "$REPO/.." && pwd)/shared/bench}"
WORK="${BENCH_WORK:-$REPO/target/bench/shared}"
DOCKER="${DOCKER:-/usr/bin/docker}"
BASE_REF="rbuild-bench/busybox:shared"
PEERS="buildkit,rbuild"
WORKLOADS="simple,many-layers,multistage-parallel,dockerignore,cache-mount,big-context"
RUNS=3
SCENARIOS="cold noop change"
while [ $# -gt 0 ]; do
  case "$1" in
    -p) PEERS="$2"; shift 2 ;;
    -w) WORKLOADS="$2"; shift 2 ;;
    -r) RUNS="$2"; shift 2 ;;
    -s) SCENARIOS="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ -x "$SHARED/run-peers.sh" ] || die "no shared benchmark at $SHARED (set SHARED_BENCH)"
[ "$(id -u)" = 0 ] || die "run as root"
command -v skopeo >/dev/null || die "skopeo not installed (apt-get install skopeo)"
if [ -z "${RBUILD:-}" ]; then
  log "cargo build --release -p rbuild-cli"
  (cd "$REPO" && cargo build --release -q -p rbuild-cli)
  RBUILD="$REPO/target/release/rbuild"
fi
mkdir -p "$WORK/workloads" "$WORK/state" "$WORK/results" "$WORK/images"
WORK=$(cd "$WORK" && pwd)
# A private copy: a concurrent `cargo build` must not swap the binary in the middle of the run.
cp "$RBUILD" "$WORK/rbuild.bin"; RBUILD="$WORK/rbuild.bin"

# ------------------------------------------------------------------ dockerd
if ! "$DOCKER" info >/dev/null 2>&1; then
  log "starting dockerd --iptables=false --bridge=none (log: $WORK/dockerd.log)"
  setsid nohup dockerd --iptables=false --bridge=none >"$WORK/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 90); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || die "dockerd did not come up; see $WORK/dockerd.log"
fi

# ------------------------------------------------------------------ workloads (copy, FROM rewritten)
for d in "$SHARED"/workloads/*/; do
  name=$(basename "$d")
  mkdir -p "$WORK/workloads/$name"
  tar -C "$d" --exclude=./ctx --exclude=./.gen-stamp -cf - . | tar -C "$WORK/workloads/$name" -xf -
  sed -i -E "s#^(FROM[[:space:]]+)busybox([[:space:]]|\$)#\1$BASE_REF\2#I" "$WORK/workloads/$name/Dockerfile"
done

# ------------------------------------------------------------------ base image, both engines
# make_busybox_tar from the shared setup.sh (its single definition of the harness's busybox)
STATE_DIR="$WORK/state"
eval "$(sed -n '/^make_busybox_tar() {/,/^}/p' "$SHARED/setup.sh")"
declare -F make_busybox_tar >/dev/null || die "make_busybox_tar not found in $SHARED/setup.sh"
mkdir -p "$STATE_DIR/rootfs"
bb_tar=$(make_busybox_tar)
"$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["sh"]' "$bb_tar" "$BASE_REF" >/dev/null
rm -rf "$WORK/images/busybox"
# The layout's ref name is the full reference (setup.sh writes the bare tag `latest`): `rbuild
# load` names an image only from a full reference, and an unnamed loaded image cannot be
# tagged afterwards (its "Loaded image ID" is not in the image index).
skopeo copy -q --dest-compress "docker-daemon:$BASE_REF" "oci:$WORK/images/busybox:$BASE_REF"
tar -C "$WORK/images/busybox" -cf "$WORK/images/busybox.oci.tar" .
rm -rf "$WORK/rbuild-base"
"$RBUILD" --root "$WORK/rbuild-base" load -i "$WORK/images/busybox.oci.tar" >&2
"$RBUILD" --root "$WORK/rbuild-base" inspect "$BASE_REF" >/dev/null \
  || die "rbuild load did not name the image $BASE_REF"
log "base image $BASE_REF: docker $("$DOCKER" image inspect -f '{{.Id}}' "$BASE_REF"), rbuild $("$RBUILD" --root "$WORK/rbuild-base" inspect "$BASE_REF" | jq -r '.[0].Id')"

# ------------------------------------------------------------------ run the shared harness
STORE="$WORK/rbuild-store"
export RBUILD
export RBUILD_FLAGS="--root $STORE --progress=plain"
export RBUILD_PRUNE="rm -rf '$STORE' && cp -a '$WORK/rbuild-base' '$STORE'"
export RBUILD_LAYERS="'$RBUILD' --root '$STORE' inspect \"\$TAG\" | jq '.[0].RootFS.Layers | length'"
export RBUILD_SIZE="t=\$(mktemp) && '$RBUILD' --root '$STORE' save -o \"\$t\" \"\$TAG\" && python3 -c '
import sys, tarfile
t = tarfile.open(sys.argv[1])
print(sum(m.size for m in t if m.name.endswith(\"layer.tar\")))' \"\$t\"; rm -f \"\$t\""
export STATE_DIR="$WORK/state" IMAGES_DIR="$WORK/images" WORKLOADS_DIR="$WORK/workloads"
export RESULTS_DIR="$WORK/results"
log "run-peers: peers [$PEERS] workloads [$WORKLOADS] runs $RUNS scenarios [$SCENARIOS]"
rc=0
"$SHARED/run-peers.sh" -p "$PEERS" -w "$WORKLOADS" -r "$RUNS" -s "$SCENARIOS" || rc=$?
log "results: $WORK/results/results-peers.md (raw: $WORK/results/results-raw/runs.jsonl, logs: $WORK/state/logs/)"
[ ! -f "$WORK/results/results-peers.md" ] || cat "$WORK/results/results-peers.md"
exit "$rc"
