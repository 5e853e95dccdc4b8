#!/usr/bin/env python3
"""A command for the full-disk tests: writes known output and records its hash outside the state dir.

Usage: flood.py HASHFILE STEP [STEP ...]   -- steps run in order:

  out:N        N bytes of numbered lines on stdout (the last one cut short), in writes of 64 KiB
  err:TEXT     a line on stderr
  cp:VALUE     a progress marker line "checkpoint:VALUE" on stdout
  rm:PATH      delete PATH (space comes back)
  sh:CMD       run CMD with sh -c
  wait:PATH    wait (up to 60 s) until PATH exists
  full:PATH    wait (up to 60 s) until the filesystem of PATH is full (under 64 KiB free): the output
               written so far has reached the disk (the keeper may still be draining the pipe)
  hang         sleep forever, silently
  exit:CODE    exit with CODE
  tag:ANY      no-op (lets the tests find and clean up their processes)

After every step, HASHFILE holds the sha256 and the length of everything written to stdout so far
("HEX LENGTH"), replaced atomically, so the tests can compare what hbwrap passed through.
"""
import hashlib
import os
import subprocess
import sys
import time

digest = hashlib.sha256()
written = 0
line_no = 0


def write(data: bytes) -> None:
    global written
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
    digest.update(data)
    written += len(data)


def lines(n: int) -> None:
    global line_no
    buf = bytearray()
    while n > 0:
        line = b"%09d the quick brown fox jumps over the lazy dog 0123456789abcdef\n" % line_no
        line_no += 1
        piece = line if n >= len(line) else line[:n - 1] + b"\n"
        buf += piece
        n -= len(piece)
        if len(buf) >= 65536:
            write(bytes(buf))
            buf.clear()
    if buf:
        write(bytes(buf))


def record(path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{digest.hexdigest()} {written}\n")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    hash_file = argv[1]
    for step in argv[2:]:
        kind, _, arg = step.partition(":")
        if kind == "out":
            lines(int(arg))
        elif kind == "err":
            os.write(2, arg.encode() + b"\n")
        elif kind == "cp":
            write(b"checkpoint:" + arg.encode() + b"\n")
        elif kind == "rm":
            os.unlink(arg)
        elif kind == "wait":
            end = time.monotonic() + 60
            while not os.path.exists(arg) and time.monotonic() < end:
                time.sleep(0.01)
        elif kind == "full":
            end = time.monotonic() + 60
            while time.monotonic() < end:
                st = os.statvfs(arg)
                if st.f_bavail * st.f_frsize < 64 * 1024:
                    break
                time.sleep(0.01)
        elif kind == "sh":
            subprocess.run(["sh", "-c", arg], check=True)
        elif kind == "hang":
            record(hash_file)
            while True:
                time.sleep(3600)
        elif kind == "exit":
            record(hash_file)
            return int(arg)
        elif kind != "tag":
            raise SystemExit(f"flood.py: unknown step {step!r}")
        record(hash_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
