"""The job's output log: its layout, and what both its writer and its follower use.

The keeper writes it (logwriter.py), the supervisor follows it (logfollower.py; passthrough.py passes
it on): each process imports only its side.

Layout: `output.log` holds the command's bytes exactly as produced (stdout and stderr interleaved in
arrival order), so `tail -f` and `hbwrap logs` read it as it is. `output.idx` says which stream each
byte belongs to, as text lines written *before* the bytes they describe:

    G <n>        first line: the generation of this log (incremented by every rotation)
    O <offset>   from this byte offset on, the bytes are stdout
    E <offset>   ... stderr
    L <offset> <bytes> <unsent>
                 a gap: <bytes> of output belong before the byte at <offset> but are not in the log (the
                 disk was full); <unsent> of them did not reach the supervisor either (channel.py)
    R <offset>   the log was rotated when it was this long: continue in generation n+1

A full disk (ENOSPC, EDQUOT, EROFS, any failed write) never stops the writer: output the log cannot take
is handed back to the keeper (which sends it to its supervisor) and counted as the current gap; at the
next write that the disk takes again, the gap's `L` line goes first. Index lines are written whole or
not at all (a torn line is cut off again), and readers only act on whole lines, so the index stays
readable whatever the disk does.
"""
from __future__ import annotations

import os

from hbwrap.jobfiles import open_job_file

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: the keeper imports this module, and pathlib is 2 MB
    from pathlib import Path

READ_CHUNK = 256 * 1024
STDOUT, STDERR = "O", "E"
GAP = "L"  # the stream of a Gap piece from LogFollower.read(gaps=True)


class Gap(tuple):
    """A hole in the log: `size` bytes of output missing here, `unsent` of them the keeper could not hand to
    its supervisor either. (A tuple, not a typing.NamedTuple: the keeper imports this module.)"""

    __slots__ = ()

    def __new__(cls, size: int, unsent: int):
        return tuple.__new__(cls, (size, unsent))

    size = property(lambda self: self[0])
    unsent = property(lambda self: self[1])

    def __repr__(self) -> str:
        return f"Gap(size={self[0]}, unsent={self[1]})"


def rotated_path(path) -> str:
    """Where a rotation moves `path`: the previous generation."""
    return os.fspath(path) + ".1"


def read_generation(idx_path: Path) -> int | None:
    try:
        with os.fdopen(open_job_file(idx_path, os.O_RDONLY), "rb") as f:
            first = f.readline()
    except FileNotFoundError:
        return None
    if first.startswith(b"G ") and first.endswith(b"\n"):
        try:
            return int(first[2:])
        except ValueError:
            return None
    return None


def log_position(log_path: Path, idx_path: Path) -> tuple[int, int]:
    """(generation, size) of the log now: where a follower starts to see only new output."""
    for _ in range(5):
        gen = read_generation(idx_path)
        try:
            size = os.lstat(log_path).st_size
        except FileNotFoundError:
            size = 0
        if read_generation(idx_path) == gen:
            return (gen if gen is not None else 0), size
    return (gen if gen is not None else 0), size


def index_size(idx_path: Path) -> int:
    """How long the index is now: gaps recorded up to here are history to a follower starting now."""
    try:
        return os.lstat(idx_path).st_size
    except OSError:
        return 0
