#!/usr/bin/env bash
# bench/ab-run-step.sh — two rbuild binaries on the same `RUN true` x N build, interleaved:
# the before/after check for an optimisation of the RUN path.
#
#   bench/ab-run-step.sh [-n N] [-r REPS] [-m true|write] BINARY_A BINARY_B
#
# Each rep builds `FROM base` + LABEL + N x `RUN true` (-m write: `RUN echo I > /step`, which
# commits a layer per step) (default N=50, REPS=7, -m true) with A, then with B
# (the order alternates between reps), each from a fresh copy of a store holding only the base
# image (made by A). Prints each binary's median wall time and ms per step, and B against A.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=50
REPS=7
MODE=true
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    -r) REPS="$2"; shift 2 ;;
    -m) MODE="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# = 2 ] || { echo "usage: $0 [-n N] [-r REPS] [-m true|write] BINARY_A BINARY_B" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2")
WORK="${BENCH_WORK:-$REPO/target/bench/ab}"
mkdir -p "$WORK/ctx"
rm -rf "$WORK/trash"; mkdir -p "$WORK/trash"
trap 'rm -rf "$WORK/trash"' EXIT
"$REPO/testdata/base/make-busybox-rootfs.sh" "$WORK/bbroot"
rm -rf "$WORK/base-store"
printf 'FROM scratch\nCOPY . /\n' >"$WORK/base.Dockerfile"
"$A" --root "$WORK/base-store" build -q -t bench-base -f "$WORK/base.Dockerfile" "$WORK/bbroot" >/dev/null
case "$MODE" in true|write) ;; *) echo "unknown mode $MODE (true, write)" >&2; exit 2 ;; esac
{ printf 'FROM bench-base\nLABEL bench=ab\n'
  for i in $(seq 1 "$N"); do
    if [ "$MODE" = true ]; then echo 'RUN true'; else echo "RUN echo $i > /step"; fi
  done
} >"$WORK/Dockerfile.n"
printf 'FROM bench-base\nLABEL bench=ab\n' >"$WORK/Dockerfile.0"
one() { # BINARY DOCKERFILE -> ms
  # moved aside, not deleted, before a timed build (see run-step-overhead.sh's reset)
  [ ! -e "$WORK/store" ] || mv "$WORK/store" "$WORK/trash/$(date +%s%N)"
  cp -a "$WORK/base-store" "$WORK/store"; sync
  local t0 t1
  t0=$(date +%s%N)
  "$1" --root "$WORK/store" build -q -t out -f "$2" "$WORK/ctx" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
: >"$WORK/runs.tsv"
for rep in $(seq 1 "$REPS"); do
  order="A B"; [ $((rep % 2)) = 0 ] && order="B A"
  for x in $order; do
    bin=$A; [ "$x" = B ] && bin=$B
    z=$(one "$bin" "$WORK/Dockerfile.0"); n=$(one "$bin" "$WORK/Dockerfile.n")
    printf '%s\t%s\t%s\n' "$x" "$z" "$n" >>"$WORK/runs.tsv"
    echo "rep $rep $x: N=0 ${z} ms, N=$N ${n} ms" >&2
  done
done
python3 - "$WORK/runs.tsv" "$N" "$A" "$B" <<'PY'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]).read().splitlines()]
n = int(sys.argv[2])
res = {}
for who in 'AB':
    z = statistics.median(int(r[1]) for r in rows if r[0] == who)
    w = statistics.median(int(r[2]) for r in rows if r[0] == who)
    res[who] = (w - z) / n
    print(f"{who} {sys.argv[3 if who == 'A' else 4]}: N=0 {z:.0f} ms, N={n} {w:.0f} ms, "
          f"{res[who]:.2f} ms/step")
print(f"B - A: {res['B'] - res['A']:+.2f} ms/step ({(res['B'] / res['A'] - 1) * 100:+.0f}%)")
PY
