#!/usr/bin/env bash
# The README's main job on a fresh machine: build rbuild, make a busybox base image from
# Debian's busybox-static (with rbuild itself: FROM scratch + COPY of the rootfs), build the
# example app image (testdata/examples/app) on it, and show the result: the image list, its
# config, its files, and an OCI archive checked by skopeo.
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
echo "(running images arrives with the sandbox: rbuild run)"
