"""The keeper's pipe to its supervisor: the handshake line, then what the disk refused (a full disk).

This module is the protocol (frames, limits); the keeper's end is channelwriter.py, the supervisor's
channelreader.py, so each process holds only its own.

A supervisor starts its keeper with the write end of a pipe. The keeper writes its handshake line there
(`ok PID START`, or `exec CODE TEXT` and closes it) and then keeps the pipe for binary frames, each a
HEADER and a body:

    D  output the log could not take: the log position it belongs at (generation, offset), stream, bytes
    X  how many bytes of such output the keeper dropped there instead (see below)
    K  the keeper's record (JSON), when keeper.json could not be written
    W  a file the keeper could not write (path) and the errno, once per failure

Every other byte of output reaches the supervisor through the log; only a full disk (ENOSPC, EDQUOT,
EROFS, ...) sends output this way, and the log's index records where the gap is (logwriter.LogWriter), so
the supervisor can put these bytes back in their place in the stream.

The keeper never blocks on the pipe: what the pipe does not take yet waits in memory, up to SPILL_MAX
bytes of output. While that is full the keeper stops reading the command (its pipe fills up and it waits,
as it would writing to a slow terminal), but for SPILL_STALL_S at most: a supervisor that takes nothing
for that long is stopped or hung, and then further output that the disk refuses is dropped (and counted).
A supervisor that is gone (EPIPE) gets nothing more. The supervisor reads a frame only when the log
reader has reached its position, so its memory holds at most one frame.
"""
from __future__ import annotations

import struct

HEADER = struct.Struct("!cQQcI")  # kind, generation (W: errno), offset, stream, body length
DATA, DROPPED, RECORD, WARNING = b"D", b"X", b"K", b"W"
SPILL_MAX = 16 * 1024 * 1024   # bytes of output the keeper holds for a slow supervisor
SPILL_STALL_S = 2.0            # a supervisor taking nothing for this long is not waited for
PIPE_SIZE = 1 << 20
READ_MAX = 1 << 20


class Frame:
    """Output the log could not take: it belongs at log position `position`, before the byte there."""

    __slots__ = ("position", "stream", "data")

    def __init__(self, position: tuple[int, int], stream: str, data: bytes):
        self.position, self.stream, self.data = position, stream, data

    def __eq__(self, other) -> bool:
        return isinstance(other, Frame) and (self.position, self.stream, self.data) == (
            other.position, other.stream, other.data)

    def __repr__(self) -> str:
        return f"Frame({self.position}, {self.stream!r}, {len(self.data)} bytes)"
