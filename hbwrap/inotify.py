"""A minimal inotify binding (Linux, through hbwrap.libc): lets the supervisor sleep until a watched file changes."""
from __future__ import annotations

import os
import struct

from hbwrap.libc import call

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
DIR_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE

_HEADER = struct.Struct("iIII")


class Inotify:
    """Directory watches; `read()` returns the set of (directory, name) pairs that changed."""

    def __init__(self):
        self.fd = call("inotify_init1", IN_NONBLOCK | IN_CLOEXEC)
        self._dirs: dict[int, str] = {}

    def watch_dir(self, path: str) -> None:
        try:
            wd = call("inotify_add_watch", self.fd, os.fsencode(path), DIR_MASK)
        except OSError:
            raise OSError(f"inotify_add_watch failed for {path}") from None
        self._dirs[wd] = path

    def read(self) -> set[tuple[str, str]] | None:
        """What changed since the last read; None when the kernel's queue overflowed (anything may have)."""
        changed: set[tuple[str, str]] = set()
        overflow = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return None if overflow else changed
            pos = 0
            while pos + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
                overflow = overflow or bool(mask & IN_Q_OVERFLOW)
                name = data[pos + _HEADER.size: pos + _HEADER.size + length].rstrip(b"\0")
                pos += _HEADER.size + length
                if wd in self._dirs:
                    changed.add((self._dirs[wd], os.fsdecode(name)))

    def close(self) -> None:
        os.close(self.fd)
