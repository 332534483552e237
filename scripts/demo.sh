#!/usr/bin/env bash
# The README's main job on a fresh machine: build rbuild, make a busybox base image from
# Debian's busybox-static (with rbuild itself: FROM scratch + COPY of the rootfs), build the
# example app image (testdata/examples/app, whose RUN step runs in rbuild's sandbox) on it, show
# the result (the image list, its config, an OCI archive checked by skopeo), and run it: a
# one-off command, then the web server detached, fetched from the host, stopped and removed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo build --release -p rbuild-cli
rbuild=target/release/rbuild
store=target/demo-store
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

testdata/base/make-busybox-rootfs.sh "$work/busybox"
printf 'FROM scratch\nCOPY . /\nCMD ["/bin/sh"]\n' > "$work/busybox.Dockerfile"
"$rbuild" --root "$store" build --progress=plain -t busybox -f "$work/busybox.Dockerfile" "$work/busybox"
"$rbuild" --root "$store" build --progress=plain -t rbuild-example:latest testdata/examples/app
"$rbuild" --root "$store" images
"$rbuild" --root "$store" inspect rbuild-example | head -40
"$rbuild" --root "$store" build -q -o "type=oci,dest=$work/example.oci.tar" testdata/examples/app >/dev/null
skopeo inspect "oci-archive:$work/example.oci.tar" | head -20
"$rbuild" --root "$store" build -q -o "type=local,dest=$work/rootfs" testdata/examples/app >/dev/null
echo "files the example added:"; find "$work/rootfs/srv" "$work/rootfs/usr/local/bin" | sort

echo "== rbuild run: a one-off command in the image"
"$rbuild" --root "$store" run --rm rbuild-example:latest sh -c 'id; cat /srv/www/build-info.txt'
echo "== rbuild run -d: the image's own command (busybox httpd on the host's network, port 18080)"
"$rbuild" --root "$store" rm -f rbuild-demo >/dev/null 2>&1 || true
"$rbuild" --root "$store" run -d --name rbuild-demo -e PORT=18080 rbuild-example:latest
"$rbuild" --root "$store" ps
for _ in $(seq 50); do
  if page=$(busybox wget -q -O - http://127.0.0.1:18080/ 2>/dev/null); then break; fi
  sleep 0.1
done
echo "GET http://127.0.0.1:18080/ ->"; printf '%s\n' "${page:-"(no answer)"}" | head -5
"$rbuild" --root "$store" stop rbuild-demo
"$rbuild" --root "$store" logs rbuild-demo | tail -3
"$rbuild" --root "$store" rm rbuild-demo
[ -n "${page:-}" ] || { echo "the example server did not answer" >&2; exit 1; }
