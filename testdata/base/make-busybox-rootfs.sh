#!/usr/bin/env bash
# Makes the root filesystem of the `busybox` test base image in DIR from Debian's busybox-static:
# /bin/busybox with a symlink per applet, a fixed /etc/passwd and /etc/group, /tmp and /root.
# The tests build the same image (rbuild's fixtures) and the BuildKit oracle imports it
# (testdata/build/record-buildkit.sh), so both start from identical files.
set -euo pipefail
dir=${1:?usage: make-busybox-rootfs.sh DIR}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "need $busybox: apt-get install busybox-static" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root"
cp "$busybox" "$dir/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
done
cat > "$dir/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$dir/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
bin:x:2:
www-data:x:33:
staff:x:50:daemon,www-data
nogroup:x:65534:
GROUP
chmod 0755 "$dir" "$dir/bin" "$dir/etc"
chmod 0644 "$dir/etc/passwd" "$dir/etc/group"
chmod 1777 "$dir/tmp"
chmod 0700 "$dir/root"
find "$dir" -exec touch -h -d @0 {} +
