#!/usr/bin/env bash
# bench/run-cache.sh — the build cache and stage scheduling of rbuild against Docker's BuildKit,
# measured in the same run: ONE table with, for each target of issue 5, rbuild's number,
# BuildKit's number, the ratio, the target and PASS/FAIL.
#
# Requirements checked (workloads: ../shared/bench/workloads, its README has what each stresses):
#   noop/WORKLOAD       no-op rebuild of every workload            rbuild <= 0.1 x BuildKit
#   change/big-context  rebuild after its CHANGE_FILE changed      rbuild <= 0.3 x BuildKit
#   multistage-parallel cold build wall <= 1.2 x its longest stage (each named stage built alone,
#                       cold, with --target; longest = the largest of those medians)
#   many-layers         cold build                                 rbuild <  BuildKit
#   big-context RSS     rbuild's peak RSS (/usr/bin/time %M), cold and change builds: < 200 MB
#                       (decimal; the largest of the runs, not the median). BuildKit's column:
#                       dockerd's VmHWM (reset through /proc/PID/clear_refs before the build) +
#                       the docker client's peak RSS, for comparison only.
#
# Method, per workload, REPS times each (medians; interleaved: rbuild then BuildKit per rep):
#   cold    rbuild: a fresh copy of a store holding only the base image (the previous store is
#           moved aside, deleted at the end); BuildKit: the previous output image removed and
#           `docker builder prune -af` (the whole BuildKit cache of that dockerd). Not timed.
#   noop    the same build again, right after the cold ones (every step cached).
#   change  (big-context) a new token written into the workload's CHANGE_FILE, as
#           ../shared/bench/run-peers.sh does, then both engines rebuild; restored at the end.
#   stage   (multistage-parallel) each named stage alone, cold, `--target STAGE`.
# Wall clock around the build command only ($EPOCHREALTIME, after a `sync`), under
# /usr/bin/time. `--progress=plain` for both, `--network=host` for BuildKit (dockerd runs with
# --bridge=none), rbuild with its defaults (--jobs: every ready stage). Every build must exit 0;
# for each build the log's RUN/COPY/ADD steps that ran (not CACHED) are counted, so a no-op that
# ran anything shows up in the details table.
#
# Same inputs for both engines (as bench/run-shared-peers.sh does): the workloads are copied to
# $BENCH_WORK/workloads (gen.sh makes the big contexts there) with `FROM busybox` rewritten to
# BASE_REF, an image this script owns in both engines: the harness's busybox rootfs
# (make_busybox_tar from ../shared/bench/setup.sh), `docker import`ed, written as an OCI layout by
# skopeo and `rbuild load`ed, so both have the same layer and config.
#
# Usage: bench/run-cache.sh [-r REPS] [-w simple,many-layers,...]
#   -r REPS       builds per cell (default 5)
#   -w WORKLOADS  a subset (default: all six); rows of workloads not measured are left out
# Env: RBUILD=path   use this binary (default: `cargo build --release -p rbuild-cli`, then
#                    target/release/rbuild; a private copy is used either way)
#      BENCH_WORK    work/results dir (default target/bench/cache)
#      SHARED_BENCH  the shared harness (default ../shared/bench beside the repo)
#      DOCKER        docker client (default /usr/bin/docker, the 20.10 client with BuildKit)
#      BUILD_TIMEOUT seconds per build (default 900)
# Output: the table on stdout and in $BENCH_WORK/results.md (plus a details table of every
#         cell); every build in $BENCH_WORK/runs.tsv; logs in $BENCH_WORK/logs/SESSION/.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED_BENCH:-$(cd "$REPO/.." && pwd)/shared/bench}"
WORK="${BENCH_WORK:-$REPO/target/bench/cache}"
DOCKER="${DOCKER:-/usr/bin/docker}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-900}"
BASE_REF="rbuild-bench/busybox:cache"
ALL_WORKLOADS="simple many-layers multistage-parallel dockerignore cache-mount big-context"
WORKLOADS="$ALL_WORKLOADS"
REPS=5
while [ $# -gt 0 ]; do
  case "$1" in
    -r) REPS="$2"; shift 2 ;;
    -w) WORKLOADS="${2//,/ }"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "-r needs a positive number"
for w in $WORKLOADS; do
  [[ " $ALL_WORKLOADS " == *" $w "* ]] || die "unknown workload $w (one of: $ALL_WORKLOADS)"
done
[ "$(id -u)" = 0 ] || die "run as root (rbuild mounts overlayfs, dockerd needs root)"
[ -x "$SHARED/run-peers.sh" ] || die "no shared benchmark at $SHARED (set SHARED_BENCH)"
for c in skopeo jq python3 /usr/bin/time; do
  command -v "$c" >/dev/null || die "$c not installed"
done

mkdir -p "$WORK/workloads" "$WORK/state" "$WORK/images"
WORK=$(cd "$WORK" && pwd)
SESSION="$(date -u +%Y%m%dT%H%M%SZ)"
LOGS="$WORK/logs/$SESSION"
mkdir -p "$LOGS"
rm -rf "$WORK/trash"; mkdir -p "$WORK/trash"

# ------------------------------------------------------------------ the shared helpers
# lib/common.sh: log/die, dockerd_pid, docker_track/docker_forget (removes exactly the images our
# builds created; dockerd is shared). Its state (docker-ids/) goes under $WORK, not ../shared.
export STATE_DIR="$WORK/state" IMAGES_DIR="$WORK/images" WORKLOADS_DIR="$WORK/workloads"
# shellcheck source=/dev/null
. "$SHARED/lib/common.sh"

# ------------------------------------------------------------------ rbuild binary
if [ -z "${RBUILD:-}" ]; then
  log "cargo build --release -p rbuild-cli"
  (cd "$REPO" && cargo build --release -q -p rbuild-cli)
  RBUILD="$REPO/target/release/rbuild"
fi
[ -x "$RBUILD" ] || die "RBUILD=$RBUILD is not executable"
# A private copy: a concurrent `cargo build` must not swap the binary in the middle of the run.
RBUILD_SRC="$RBUILD"
cp "$RBUILD" "$WORK/rbuild.bin"; RBUILD="$WORK/rbuild.bin"
STORE="$WORK/rbuild-store"

# ------------------------------------------------------------------ dockerd
if ! "$DOCKER" info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || die "dockerd not installed (apt-get install docker.io)"
  log "starting dockerd --iptables=false --bridge=none (log: $WORK/dockerd.log)"
  setsid nohup dockerd --iptables=false --bridge=none >"$WORK/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 90); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || die "dockerd did not come up; see $WORK/dockerd.log"
fi

# ------------------------------------------------------------------ workloads (copy, FROM rewritten)
for wl in $WORKLOADS; do
  d="$SHARED/workloads/$wl"
  [ -f "$d/workload.conf" ] || die "no $d/workload.conf"
  mkdir -p "$WORK/workloads/$wl"
  tar -C "$d" --exclude=./ctx --exclude=./.gen-stamp -cf - . | tar -C "$WORK/workloads/$wl" -xf -
  sed -i -E "s#^(FROM[[:space:]]+)busybox([[:space:]]|\$)#\1$BASE_REF\2#I" "$WORK/workloads/$wl/Dockerfile"
  if [ -x "$WORK/workloads/$wl/gen.sh" ]; then bash "$WORK/workloads/$wl/gen.sh" >&2; fi
done

# ------------------------------------------------------------------ base image, both engines
eval "$(sed -n '/^make_busybox_tar() {/,/^}/p' "$SHARED/setup.sh")"
declare -F make_busybox_tar >/dev/null || die "make_busybox_tar not found in $SHARED/setup.sh"
mkdir -p "$STATE_DIR/rootfs"
bb_tar=$(make_busybox_tar)
old_base=$("$DOCKER" image inspect -f '{{.Id}}' "$BASE_REF" 2>/dev/null || true)
"$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["sh"]' "$bb_tar" "$BASE_REF" >/dev/null
# an import gets a new ID every time: the previous run's base image is now untagged (ours)
if [ -n "$old_base" ] && [ "$old_base" != "$("$DOCKER" image inspect -f '{{.Id}}' "$BASE_REF")" ]; then
  "$DOCKER" image rm "$old_base" >/dev/null 2>&1 || true
fi
rm -rf "$WORK/images/busybox"
# The layout's ref name is the full reference: `rbuild load` names an image only from one.
skopeo copy -q --dest-compress "docker-daemon:$BASE_REF" "oci:$WORK/images/busybox:$BASE_REF"
tar -C "$WORK/images/busybox" -cf "$WORK/images/busybox.oci.tar" .
rm -rf "$WORK/rbuild-base"
"$RBUILD" --root "$WORK/rbuild-base" load -i "$WORK/images/busybox.oci.tar" >/dev/null
"$RBUILD" --root "$WORK/rbuild-base" inspect "$BASE_REF" >/dev/null \
  || die "rbuild load did not name the image $BASE_REF"

# ------------------------------------------------------------------ cleanup at exit
CHANGE_PATH="" CHANGE_BACKUP=""
TAGS=""
cleanup() {
  if [ -n "$CHANGE_BACKUP" ] && [ -f "$CHANGE_BACKUP" ]; then
    cp -p "$CHANGE_BACKUP" "$CHANGE_PATH"; rm -f "$CHANGE_BACKUP"
  fi
  local t
  for t in $TAGS; do docker_forget "$t" 2>/dev/null || true; done
  rm -rf "$WORK/trash"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ one build
docker_tag() { echo "rbuild-bench/cache-$1:${2:-latest}"; }   # WORKLOAD [STAGE]
reset() { # ENGINE WORKLOAD [STAGE]: make it cold (not timed)
  case "$1" in
    rbuild)
      # moved aside, deleted at the end: deleting a store frees many inodes, which slows inode
      # allocation on ext4 without a journal for ~30 s (see the step-overhead section)
      [ ! -e "$STORE" ] || mv "$STORE" "$WORK/trash/$(date +%s%N)"
      cp -a "$WORK/rbuild-base" "$STORE" ;;
    buildkit)
      docker_forget "$(docker_tag "$2" "${3:-}")"
      "$DOCKER" builder prune -af >/dev/null ;;
  esac
}
RUNS="$WORK/runs.tsv"
printf 'session\tengine\tworkload\tscenario\trep\twall_ms\tmaxrss_kb\tdaemon_hwm_kb\tran_steps\timage\tload1\n' >"$RUNS"
build() { # ENGINE WORKLOAD SCENARIO REP [STAGE]
  local e=$1 wl=$2 sc=$3 rep=$4 stage=${5:-} wdir="$WORK/workloads/$2"
  local CONTEXT=. DOCKERFILE=Dockerfile
  # shellcheck disable=SC1091
  . "$wdir/workload.conf"
  local ctx="$wdir/$CONTEXT" df="$wdir/$DOCKERFILE" name="$e.$wl.$sc${stage:+-$stage}.$rep"
  local lg="$LOGS/$name.log" tf="$LOGS/$name.time" iid="$LOGS/$name.iid" cmd tgt=() pid="" hwm=0
  [ -z "$stage" ] || tgt=(--target "$stage")
  case "$e" in
    rbuild) cmd=("$RBUILD" --root "$STORE" build --progress=plain --iidfile "$iid" "${tgt[@]}"
                 -t "bench-cache/$wl:${stage:-latest}" -f "$df" "$ctx") ;;
    buildkit) cmd=(env DOCKER_BUILDKIT=1 "$DOCKER" build --network=host --progress=plain
                   --iidfile "$iid" "${tgt[@]}" -t "$(docker_tag "$wl" "$stage")" -f "$df" "$ctx")
              TAGS="$TAGS $(docker_tag "$wl" "$stage")"
              pid=$(dockerd_pid || true) ;;
  esac
  printf '# %s\n' "${cmd[*]}" >"$lg"
  rm -f "$iid"
  sync
  [ -z "$pid" ] || echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
  local load t0 t1 rc=0
  load=$(cut -d' ' -f1 /proc/loadavg)
  t0=$EPOCHREALTIME
  timeout "$BUILD_TIMEOUT" /usr/bin/time -f '%M' -o "$tf" "${cmd[@]}" >>"$lg" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  [ -z "$pid" ] || hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  [ "$e" != buildkit ] || docker_track "$(docker_tag "$wl" "$stage")" "$lg"
  [ "$rc" = 0 ] || { tail -n 20 "$lg" >&2; die "$e build $name failed (exit $rc; log $lg)"; }
  local ms rss ran
  ms=$(( (10#${t1//[.,]/} - 10#${t0//[.,]/}) / 1000 ))
  rss=$(tail -n 1 "$tf")
  # RUN/COPY/ADD steps whose vertex ended in DONE (not CACHED) — both engines print BuildKit's
  # plain format: "#N [stage i/n] RUN ...", then "#N DONE 0.1s" or "#N CACHED"
  ran=$(awk '/^#[0-9]+ \[[^]]*\] (RUN|COPY|ADD) /{op[$1]=1} /^#[0-9]+ DONE/{if (op[$1]) d[$1]=1}
             END{n=0; for (k in d) n++; print n}' "$lg")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SESSION" "$e" "$wl" \
    "$sc${stage:+:$stage}" "$rep" "$ms" "$rss" "$hwm" "$ran" "$(cat "$iid" 2>/dev/null || echo -)" \
    "$load" >>"$RUNS"
  log "  $e $wl $sc${stage:+ $stage} rep $rep: ${ms} ms, rss $((rss / 1024)) MiB, ran $ran steps"
}

# ------------------------------------------------------------------ measure
ENGINES="rbuild buildkit"
log "session $SESSION: workloads [$WORKLOADS], $REPS reps; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
T0=$SECONDS
for wl in $WORKLOADS; do
  log "== $wl"
  for rep in $(seq 1 "$REPS"); do
    for e in $ENGINES; do reset "$e" "$wl"; build "$e" "$wl" cold "$rep"; done
  done
  for rep in $(seq 1 "$REPS"); do
    for e in $ENGINES; do build "$e" "$wl" noop "$rep"; done
  done
  if [ "$wl" = big-context ]; then
    CHANGE_FILE=""
    # shellcheck disable=SC1091
    . "$WORK/workloads/$wl/workload.conf"
    CHANGE_PATH="$WORK/workloads/$wl/$CHANGE_FILE"
    CHANGE_BACKUP=$(mktemp); cp -p "$CHANGE_PATH" "$CHANGE_BACKUP"
    for rep in $(seq 1 "$REPS"); do
      printf '1.0.%s-%s\n' "$rep" "$(date +%s%N)" >"$CHANGE_PATH"
      for e in $ENGINES; do build "$e" "$wl" change "$rep"; done
    done
    cp -p "$CHANGE_BACKUP" "$CHANGE_PATH"; rm -f "$CHANGE_BACKUP"; CHANGE_BACKUP=""
  fi
  if [ "$wl" = multistage-parallel ]; then
    stages=$(sed -nE 's/^FROM[[:space:]]+[^[:space:]]+[[:space:]]+AS[[:space:]]+([^[:space:]]+).*/\1/Ip' \
      "$WORK/workloads/$wl/Dockerfile")
    [ -n "$stages" ] || die "no named stages in $wl/Dockerfile"
    for rep in $(seq 1 "$REPS"); do
      for st in $stages; do
        for e in $ENGINES; do reset "$e" "$wl" "$st"; build "$e" "$wl" stage "$rep" "$st"; done
      done
    done
  fi
  for t in $TAGS; do docker_forget "$t"; done; TAGS=""
done
log "all builds done in $((SECONDS - T0)) s"

# ------------------------------------------------------------------ report
dockerd_version=$("$DOCKER" version -f '{{.Server.Version}}' 2>/dev/null || echo '?')
machine="$(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), \
$(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), \
$(findmnt -no FSTYPE -T "$WORK" 2>/dev/null || echo '?') store; dockerd $dockerd_version"
rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] || rev="$rev + uncommitted changes"
version="$("$RBUILD" --version 2>/dev/null | head -n1) (binary of $(date -u -r "$RBUILD_SRC" '+%H:%M UTC'); tree at $rev when measured)"
python3 - "$RUNS" "$machine" "$REPS" "$version" \
  >"$WORK/results.md" <<'PY'
import csv, datetime, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
machine, reps, version = sys.argv[2], sys.argv[3], sys.argv[4]
cells = {}
for r in rows:
    cells.setdefault((r["engine"], r["workload"], r["scenario"]), []).append(r)
def med(e, wl, sc):
    v = cells.get((e, wl, sc))
    return statistics.median(int(r["wall_ms"]) for r in v) if v else None
def peak(e, wl, sc, daemon=False):
    v = cells.get((e, wl, sc))
    if not v:
        return None
    return max(int(r["maxrss_kb"]) + (int(r["daemon_hwm_kb"]) if daemon else 0) for r in v)
def s(ms):
    return f"{ms / 1000:.3f} s" if ms < 10000 else f"{ms / 1000:.2f} s"
def mb(kb):
    return f"{kb * 1024 / 1e6:.0f} MB"
loads = [float(r["load1"]) for r in rows]
now = datetime.datetime.now(datetime.timezone.utc)
print(f"{now:%Y-%m-%d %H:%M} UTC; {machine}; {version}; median of {reps} builds per cell "
      f"(RSS: the largest); load average during the builds {min(loads):.2f}–{max(loads):.2f}")
print()
print("| requirement | rbuild | BuildKit | compared with | ratio | target | result |")
print("|---|---|---|---|---|---|---|")
results = []
def row(req, rb, bk, ref, ratio, target, ok):
    results.append(ok)
    print(f"| {req} | {rb} | {bk} | {ref} | {ratio} | {target} | {'PASS' if ok else '**FAIL**'} |")
order = ["simple", "many-layers", "multistage-parallel", "dockerignore", "cache-mount", "big-context"]
wls = [w for w in order if ("rbuild", w, "cold") in cells]
for w in wls:
    r, b = med("rbuild", w, "noop"), med("buildkit", w, "noop")
    row(f"no-op rebuild, {w}", s(r), s(b), "BuildKit", f"{r / b:.3f}", "≤ 0.10", r <= 0.1 * b)
if ("rbuild", "big-context", "change") in cells:
    r, b = med("rbuild", "big-context", "change"), med("buildkit", "big-context", "change")
    row("one-file change, big-context", s(r), s(b), "BuildKit", f"{r / b:.3f}", "≤ 0.30", r <= 0.3 * b)
if "multistage-parallel" in wls:
    w = "multistage-parallel"
    def longest(e):
        st = {sc.split(":", 1)[1]: med(e, w, sc) for (ee, ww, sc) in cells
              if ee == e and ww == w and sc.startswith("stage:")}
        name = max(st, key=st.get)
        return name, st[name]
    rn, rl = longest("rbuild")
    bn, bl = longest("buildkit")
    r, b = med("rbuild", w, "cold"), med("buildkit", w, "cold")
    row(f"cold build, {w}", s(r), f"{s(b)} ({b / bl:.2f}× its longest stage)",
        f"rbuild's longest stage alone ({rn}): {s(rl)}", f"{r / rl:.3f}", "≤ 1.20", r <= 1.2 * rl)
if "many-layers" in wls:
    r, b = med("rbuild", "many-layers", "cold"), med("buildkit", "many-layers", "cold")
    row("cold build, many-layers", s(r), s(b), "BuildKit", f"{r / b:.3f}", "< 1.00", r < b)
if "big-context" in wls:
    for sc, what in (("cold", "cold build"), ("change", "one-file change")):
        if ("rbuild", "big-context", sc) not in cells:
            continue
        r = peak("rbuild", "big-context", sc)
        b = peak("buildkit", "big-context", sc, daemon=True)
        row(f"peak RSS, big-context {what}", mb(r), f"{mb(b)} (dockerd + client)",
            "200 MB", f"{r * 1024 / 200e6:.3f}", "< 1.00", r * 1024 < 200e6)
print()
print(f"{sum(results)} of {len(results)} targets met.")
print()
print("Details (every cell; `ran` = RUN/COPY/ADD steps executed rather than CACHED, per build; "
      "`ids` = distinct image IDs the builds of the cell produced):")
print()
print("| workload | scenario | engine | median | min–max ms | peak RSS (client; +dockerd) | ran | ids |")
print("|---|---|---|---|---|---|---|---|")
sc_order = {"cold": 0, "noop": 1, "change": 2}
for (e, w, sc) in sorted(cells, key=lambda k: (order.index(k[1]), sc_order.get(k[2], 3), k[2],
                                              k[0] != "rbuild")):
    v = cells[(e, w, sc)]
    ms = [int(r["wall_ms"]) for r in v]
    rss = max(int(r["maxrss_kb"]) for r in v)
    dm = max(int(r["maxrss_kb"]) + int(r["daemon_hwm_kb"]) for r in v)
    rss_s = mb(rss) + (f"; {mb(dm)}" if e == "buildkit" else "")
    ran = ",".join(r["ran_steps"] for r in v)
    ids = len({r["image"] for r in v})
    print(f"| {w} | {sc} | {'docker-buildkit' if e == 'buildkit' else e} | {s(med(e, w, sc))} | "
          f"{min(ms)}–{max(ms)} | {rss_s} | {ran} | {ids} |")
PY
sed '/^Details/,$d' "$WORK/results.md"
log "table + details: $WORK/results.md; every build: $RUNS; logs: $LOGS"
