#!/usr/bin/env bash
# bench/profile-run-step.sh — where the wall time of one rbuild `RUN true` step goes.
#
# Builds `FROM base` + N x a trivial RUN (default N=50; -m true: `RUN true`, -m write (default):
# `RUN echo I > /step`, which also commits a layer per step) once under
#   strace --seccomp-bpf -f -ttt -T -e trace=<a few marker syscalls>
# (only the marker syscalls stop the tracee, so the distortion is small), cuts each RUN step
# into phases at those markers and prints the median and mean of each phase over the steps:
#
#   overlay     mkdir of the step's work dir .. overlay fsmount returned (work dirs, lower dirs
#               looked up in the snapshot store, fsopen/fsconfig lowerdir+ x layers/fsmount)
#   sbx-parent  .. clone3(CLONE_NEWPID): /dev tmpfs + devpts, /etc/hosts etc. files, seccomp
#               program, pipes, output reader thread
#   sbx-child   .. execve("/bin/sh"): mount namespace, /proc, masked paths, pivot_root,
#               capabilities, seccomp
#   command     .. wait4 returned: `sh -c true` itself, exit, reaping
#   unmount     .. is_empty_dir's open of the upper dir: output reader join, mount stubs
#               removed from the upper dir, the overlay's last fd closed (the kernel then syncs
#               the upper filesystem: ovl_sync_fs -> sync_filesystem)
#   (a step whose upper dir ends up empty commits no layer: it has no layer/snapshot phases)
#   layer       .. mkdir of the snapshot temp dir: the upper dir as a tar, gzip, sha256, the
#               blob written + fsync'd + renamed
#   snapshot    .. the fsync of snapshots/ after the rename: parent record fsync, rename of
#               the upper dir, syncfs, rename into snapshots/, fsync of snapshots/
#   next        .. mkdir of the next step's work dir: work dir removal, history, progress
#
# Usage: bench/profile-run-step.sh [-n N] [-m write|true]   (env RBUILD, BENCH_WORK as run-step-overhead.sh)
# Also prints `perf stat` (task-clock vs elapsed) of an untraced build when perf is installed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=50
MODE=write
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    -m) MODE="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
WORK="${BENCH_WORK:-$REPO/target/bench/profile}"
command -v strace >/dev/null || { echo "strace not installed (apt-get install strace)" >&2; exit 1; }
if [ -z "${RBUILD:-}" ]; then
  (cd "$REPO" && cargo build --release -q -p rbuild-cli)
  RBUILD="$REPO/target/release/rbuild"
fi
mkdir -p "$WORK/ctx"
cp "$RBUILD" "$WORK/rbuild.bin"; RBUILD="$WORK/rbuild.bin"   # pinned: builds may run meanwhile
"$REPO/testdata/base/make-busybox-rootfs.sh" "$WORK/bbroot"
rm -rf "$WORK/base-store"
printf 'FROM scratch\nCOPY . /\n' >"$WORK/base.Dockerfile"
"$RBUILD" --root "$WORK/base-store" build -q -t bench-base -f "$WORK/base.Dockerfile" "$WORK/bbroot" >/dev/null
case "$MODE" in true|write) ;; *) echo "unknown mode $MODE (true, write)" >&2; exit 2 ;; esac
{ printf 'FROM bench-base\nLABEL bench=profile\n'
  for i in $(seq 1 "$N"); do
    if [ "$MODE" = true ]; then echo 'RUN true'; else echo "RUN echo $i > /step"; fi
  done
} >"$WORK/Dockerfile"
rm -rf "$WORK/trash"; mkdir -p "$WORK/trash"
trap 'rm -rf "$WORK/trash"' EXIT
# moved aside, not deleted, before a measured build (see run-step-overhead.sh's reset)
fresh() {
  [ ! -e "$WORK/store" ] || mv "$WORK/store" "$WORK/trash/$(date +%s%N)"
  cp -a "$WORK/base-store" "$WORK/store"; sync
}

fresh
t0=$(date +%s%N)
"$RBUILD" --root "$WORK/store" build -q -t out -f "$WORK/Dockerfile" "$WORK/ctx" >/dev/null
t1=$(date +%s%N)
echo "untraced build of $N steps: $(((t1 - t0) / 1000000)) ms (load $(cut -d' ' -f1-3 /proc/loadavg))"
if command -v perf >/dev/null; then
  fresh
  perf stat -e task-clock,context-switches "$RBUILD" --root "$WORK/store" build -q -t out \
    -f "$WORK/Dockerfile" "$WORK/ctx" 2>&1 >/dev/null | grep -E 'task-clock|context|elapsed|user|sys' || true
fi

fresh
strace --seccomp-bpf -f -ttt -T -o "$WORK/strace.txt" \
  -e trace=mkdir,fsmount,clone3,execve,wait4,openat,rename,fsync,syncfs \
  "$RBUILD" --root "$WORK/store" build -q -t out -f "$WORK/Dockerfile" "$WORK/ctx" >/dev/null

python3 - "$WORK/strace.txt" <<'PY'
import re, statistics, sys
# strace -f output: "TID SECONDS.USEC syscall(args) = ret <dur>", split calls as
# "... <unfinished ...>" + "TID SECONDS <... syscall resumed> ... <dur>".
line_re = re.compile(r'^(\d+)\s+(\d+\.\d+)\s+(.*)$')
dur_re = re.compile(r'<(\d+\.\d+)>\s*$')
events = []          # (start, end, text)
pending = {}         # tid -> (start, text)
for raw in open(sys.argv[1]):
    m = line_re.match(raw.rstrip('\n'))
    if not m:
        continue
    tid, t, rest = m.group(1), float(m.group(2)), m.group(3)
    if rest.startswith('<...'):
        if tid in pending:
            st, text = pending.pop(tid)
            d = dur_re.search(rest)
            events.append((st, st + float(d.group(1)) if d else t, text + rest))
        continue
    if rest.endswith('<unfinished ...>'):
        pending[tid] = (t, rest)
        continue
    d = dur_re.search(rest)
    events.append((t, t + float(d.group(1)) if d else t, rest))
events.sort()

step_dir = re.compile(r'^mkdir\("([^"]*/tmp/step[^"/]*)"')
steps, cur = [], None
for st, en, text in events:
    m = step_dir.match(text)
    if m:
        cur = {'dir': m.group(1), 'S': st}
        steps.append(cur)
        continue
    if cur is None:
        continue
    if 'M' not in cur and text.startswith('fsmount('):
        cur['M'] = en
    elif 'C' not in cur and text.startswith('clone3(') and 'CLONE_NEWPID' in text:
        cur['C'] = st
    elif 'C' in cur and 'X' not in cur and text.startswith('execve(') and '/bin/sh' in text:
        cur['X'] = st
    elif 'X' in cur and 'W' not in cur and text.startswith('wait4('):
        cur['W'] = en
    elif 'W' in cur and 'U' not in cur and text.startswith('openat(') \
            and f'"{cur["dir"]}/upper"' in text and 'O_DIRECTORY' in text:
        cur['U'] = st
    elif 'U' in cur and 'L' not in cur and text.startswith('mkdir(') and '/tmp/snapshot-' in text:
        cur['L'] = st
    elif 'L' in cur and 'R' in cur and 'F' not in cur and text.startswith('fsync('):
        cur['F'] = en
    elif 'L' in cur and 'R' not in cur and text.startswith('rename(') and '/snapshots/' in text:
        cur['R'] = en
for a, b in zip(steps, steps[1:]):
    a['next'] = b['S']
# Each phase ends at its marker and starts at the previous marker the step has.
phases = [('overlay', 'M'), ('sbx-parent', 'C'), ('sbx-child', 'X'), ('command', 'W'),
          ('unmount', 'U'), ('layer', 'L'), ('snapshot', 'F'), ('next', 'next')]
required = ['S', 'M', 'C', 'X', 'W', 'U', 'next']
full = [s for s in steps if all(k in s for k in required)]
if not full:
    sys.exit("no complete RUN step found in the trace (did the build change?)")
per = {name: [] for name, _ in phases}
for s in full:
    last = s['S']
    for name, k in phases:
        if k in s:
            per[name].append((s[k] - last) * 1000)
            last = s[k]
committed = sum(1 for s in full if 'F' in s)
print(f"\nphases of {len(full)} RUN steps under strace, {committed} of them committed a layer (ms):")
print(f"{'phase':<11} {'steps':>5} {'median':>7} {'mean':>7} {'max':>7}")
for name, _ in phases:
    v = per[name]
    if v:
        print(f"{name:<11} {len(v):5d} {statistics.median(v):7.2f} {statistics.mean(v):7.2f} {max(v):7.2f}")
step = [(s['next'] - s['S']) * 1000 for s in full]
print(f"{'step':<11} {len(step):5d} {statistics.median(step):7.2f} {statistics.mean(step):7.2f} {max(step):7.2f}")
PY
