#!/usr/bin/env bash
# Records what Docker's BuildKit builds for each case under testdata/build/, as the expectations
# rbuild's build tests compare against. Run by a developer (not by the tests), as root, on a
# machine with Debian's docker.io and busybox-static:
#   dockerd --iptables=false --bridge=none &   # then:
#   testdata/build/record-buildkit.sh [CASE…]
# For each case and each target listed in its `targets` file (default: the last stage) it writes
#   expected/TARGET.tree     the root filesystem (tree.py format) minus the busybox base's entries
#   expected/TARGET.config   the image config's `config` object and its history, as BuildKit wrote them
# and `expected/RECORDED` saying which Docker/BuildKit made them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
docker=/usr/bin/docker
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The busybox base, imported from the same rootfs rbuild's fixtures use.
"$here/../base/make-busybox-rootfs.sh" "$work/bbroot"
tar --sort=name --numeric-owner -C "$work/bbroot" -cf "$work/busybox.tar" .
$docker import "$work/busybox.tar" busybox:latest >/dev/null
$docker image tag busybox:latest scratch-test-base >/dev/null

cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=($(cd "$here" && ls -d */ | tr -d / | grep -v '^expected$'))
for case in "${cases[@]}"; do
  dir="$here/$case"
  [ -f "$dir/Dockerfile" ] || continue
  echo "== $case"
  ctx="$work/ctx-$case"
  rm -rf "$ctx"; cp -a "$dir/context" "$ctx"
  [ -f "$dir/setup.sh" ] && (cd "$ctx" && sh "$dir/setup.sh")
  targets=$( [ -f "$dir/targets" ] && cat "$dir/targets" || echo "-" )
  # RUN --mount=type=cache contents outlive builds: each case starts from an empty build cache.
  $docker builder prune -af >/dev/null
  mkdir -p "$dir/expected"
  for target in $targets; do
    tflag=(); name=final
    [ "$target" = "-" ] || { tflag=(--target "$target"); name=$target; }
    DOCKER_BUILDKIT=1 $docker build -q --network=host "${tflag[@]}" -f "$dir/Dockerfile" -t "rbuild-oracle/$case:$name" "$ctx" >/dev/null
    DOCKER_BUILDKIT=1 $docker build -q --network=host "${tflag[@]}" -f "$dir/Dockerfile" -o "type=tar,dest=$work/out.tar" "$ctx" >/dev/null
    python3 "$here/tree.py" --minus "$work/busybox.tar" "$work/out.tar" > "$dir/expected/$name.tree"
    # The image config as the engine stores it (docker save), for `config`, author and history
    # with its `empty_layer` flags (docker history's sizes cannot tell a directory-only layer
    # from an empty one).
    $docker save "rbuild-oracle/$case:$name" > "$work/save.tar"
    python3 - "$work/save.tar" > "$dir/expected/$name.config" <<'PY'
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    manifest = json.load(t.extractfile('manifest.json'))
    image = json.load(t.extractfile(manifest[0]['Config']))
history = [{k: v for k, v in (('CreatedBy', h.get('created_by', '')), ('Comment', h.get('comment', ''))) if v}
           | {'empty_layer': bool(h.get('empty_layer', False))} for h in image.get('history', [])]
print(json.dumps({'config': image.get('config', {}), 'author': image.get('author', ''), 'history': history,
                  'layers': len(image.get('rootfs', {}).get('diff_ids', []))}, indent=2, sort_keys=True))
PY
  done
  echo "recorded with Docker $($docker version --format '{{.Server.Version}}') (DOCKER_BUILDKIT=1), busybox base from testdata/base/make-busybox-rootfs.sh" > "$dir/expected/RECORDED"
done
