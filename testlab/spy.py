"""A local user's view of a lab host's temporary files, to test that no secret is ever readable by other users.

Run inside the host as `nobody` (tests/lab/test_exposure.py installs it as /usr/local/bin/labforge-spy): it
watches directories with inotify and opens every file the moment it is created, as any local user could. A file
opened while its mode allows it stays readable through that descriptor after a chmod, a copy or a rename, so
whatever lands in it is read when it is closed: pyinfra 3.10's upload under --sudo SFTPs the file to
`<TmpDir>/pyinfra-<sha1 of dest>` with the SFTP server's default mode (paramiko putfo, no mode; OpenSSH's
sftp-server applies 0666 & ~umask), then `cp`s it into place as root (pyinfra/connectors/ssh.py put_file, lines
593-636). What it read goes to OUT as JSON: {path: text}. It stops when STOP exists.

Usage: labforge-spy OUT STOP DIR...
"""

import contextlib
import ctypes
import json
import os
import select
import struct
import sys
import time

IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO = 0x8, 0x100, 0x80


def main(out: str, stop: str, dirs: list[str]) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    watches = {}
    for d in dirs:
        wd = libc.inotify_add_watch(fd, d.encode(), IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO)
        if wd >= 0:
            watches[wd] = d
    held: dict[str, int] = {}
    seen: dict[str, str] = {}

    def save():
        for path, handle in held.items():
            with contextlib.suppress(OSError):
                seen[path] = os.pread(handle, 1 << 20, 0).decode(errors="replace")
        tmp = out + ".partial"
        with open(tmp, "w") as stream:
            json.dump({"watched": sorted(watches.values()), "read": seen}, stream)
        os.replace(tmp, out)

    last = 0.0
    while not os.path.exists(stop):
        ready, _, _ = select.select([fd], [], [], 0.5)
        data = os.read(fd, 65536) if ready else b""
        offset = 0
        while offset < len(data):
            wd, mask, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16: offset + 16 + length].rstrip(b"\0").decode(errors="replace")
            offset += 16 + length
            path = os.path.join(watches.get(wd, "?"), name)
            if mask & (IN_CREATE | IN_MOVED_TO) and path not in held:
                try:
                    held[path] = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                except OSError:
                    seen.setdefault(path, "<not readable>")
        if time.monotonic() - last > 1:
            save()
            last = time.monotonic()
    save()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
