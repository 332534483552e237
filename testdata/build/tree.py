#!/usr/bin/env python3
"""Lists a root filesystem tar (read from a file or stdin) as one line per entry, sorted:
    PATH TYPE MODE UID:GID DETAIL
TYPE is dir, file, symlink, hardlink, char, block or fifo; MODE is octal permission bits
(with setuid/setgid/sticky); DETAIL is `SIZE sha256:HEX` for files, the target for symlinks and
hardlinks, `MAJOR,MINOR` for devices, `-` otherwise. Mtimes are left out (a git checkout sets
them). With --minus BASE.tar, entries identical to the base image's are dropped, so the listing
shows what a Dockerfile added or changed. rbuild's build tests produce the same format.

Used only to record BuildKit's results (testdata/build/record-buildkit.sh); tests do not run it."""
import hashlib, sys, tarfile

def listing(f):
    out = {}
    with tarfile.open(fileobj=f, mode='r|*') as t:
        for m in t:
            name = m.name
            while name.startswith('./'):
                name = name[2:]
            name = name.strip('/')
            if name in ('', '.'):
                continue
            mode = '%04o' % (m.mode & 0o7777)
            owner = '%d:%d' % (m.uid, m.gid)
            if m.isdir(): typ, detail = 'dir', '-'
            elif m.issym(): typ, detail = 'symlink', m.linkname
            elif m.islnk(): typ, detail = 'hardlink', m.linkname.lstrip('./').strip('/')
            elif m.ischr(): typ, detail = 'char', '%d,%d' % (m.devmajor, m.devminor)
            elif m.isblk(): typ, detail = 'block', '%d,%d' % (m.devmajor, m.devminor)
            elif m.isfifo(): typ, detail = 'fifo', '-'
            else:
                data = t.extractfile(m).read()
                typ, detail = 'file', '%d sha256:%s' % (len(data), hashlib.sha256(data).hexdigest())
            out[name] = '%s %s %s %s %s' % (name.replace(' ', '\\x20'), typ, mode, owner, detail)
    return out

def main():
    args = sys.argv[1:]
    base = {}
    if args[:1] == ['--minus']:
        with open(args[1], 'rb') as f:
            base = listing(f)
        args = args[2:]
    src = open(args[0], 'rb') if args and args[0] != '-' else sys.stdin.buffer
    entries = listing(src)
    for name in sorted(entries):
        if base.get(name) != entries[name]:
            print(entries[name])

main()
