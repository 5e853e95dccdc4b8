"""The supervisor's end of the channel from its keeper (the protocol: channel.py): the handshake line, then
frames, read only as far as they are needed."""
from __future__ import annotations

import errno
import os

from hbwrap import jsonlite
from hbwrap.channel import DATA, DROPPED, HEADER, READ_MAX, RECORD, WARNING, Frame


class ChannelReader:
    """The supervisor's end: the handshake line, then frames, read only as far as they are needed."""

    def __init__(self, fd: int):
        self.fd: int | None = fd
        os.set_blocking(fd, False)
        self.buf = bytearray()
        self.line_read = False
        self.record: dict | None = None   # the keeper's latest record sent this way
        self.records = 0                   # how many arrived (a change is news for the supervisor)
        self.warnings: list[tuple[str, int]] = []  # (path, errno) not yet said
        self.drops: list[tuple[tuple[int, int], int]] = []  # (position, bytes) the keeper dropped, not yet said
        self._head: Frame | None = None

    @property
    def closed(self) -> bool:
        return self.fd is None

    def _fill(self, want: int) -> bool:
        """Read more (at least what is there, up to `want` bytes); False when nothing came."""
        if self.fd is None:
            return False
        try:
            chunk = os.read(self.fd, max(65536, min(want, READ_MAX)))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return False
        self.buf += chunk
        return True

    def read_line(self) -> bytes | None:
        """The handshake line (without its newline): None until it is complete, or whatever came before EOF."""
        while b"\n" not in self.buf:
            if not self._fill(4096):
                if self.fd is None:
                    break
                return None
        end = self.buf.find(b"\n")
        line = bytes(self.buf[:end]) if end >= 0 else bytes(self.buf)
        del self.buf[:end + 1 if end >= 0 else len(self.buf)]
        self.line_read = True
        return line

    def peek(self) -> Frame | None:
        """The next frame of output, not consumed; records and warnings on the way are taken in."""
        if not self.line_read:
            return None
        while self._head is None:
            if len(self.buf) < HEADER.size:
                if not self._fill(HEADER.size - len(self.buf)):
                    return None
                continue
            kind, a, b, stream, length = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + length:
                if not self._fill(HEADER.size + length - len(self.buf)):
                    return None
                continue
            body = bytes(self.buf[HEADER.size:HEADER.size + length])
            del self.buf[:HEADER.size + length]
            if kind == DATA:
                self._head = Frame((a, b), stream.decode(errors="replace"), body)
            elif kind == RECORD:
                try:
                    doc = jsonlite.loads(body)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    self.record, self.records = doc, self.records + 1
            elif kind == DROPPED:
                try:
                    self.drops.append(((a, b), int(body)))
                except ValueError:
                    pass
            elif kind == WARNING:
                self.warnings.append((os.fsdecode(body), a if a < 4096 else errno.EIO))
        return self._head

    def pop(self) -> Frame | None:
        frame, self._head = self.peek(), None
        return frame

    def take_in(self) -> None:
        """Read what has arrived up to the next frame of output (records and warnings)."""
        self.peek()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
