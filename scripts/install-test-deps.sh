#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real: busybox-static (the base image the
# fixtures build), skopeo, umoci and oci-image-tool (validating OCI and docker archives), and runc
# (running the bundles `rbuild export-bundle` writes), and for the registry tests the distribution
# registry (docker-registry), htpasswd (apache2-utils) and openssl (a test CA).
# Does nothing when they are all present; needs root (apt-get) otherwise.
set -euo pipefail
packages=(busybox-static skopeo umoci oci-image-tool runc docker-registry apache2-utils openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing test dependencies: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "need root to apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
