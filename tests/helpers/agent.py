#!/usr/bin/env python3
"""A scriptable stand-in for a long-running agent, for acceptance checks.

Usage: agent.py STEP [STEP ...]   -- steps run in order:

  count:PATH          append one line to PATH; later steps see the start number n
  hangfirst:K         if n <= K: fall silent forever (a hung attempt)
  failfirst:K:CODE    if n <= K: exit CODE
  print:TEXT          a line on stdout           err:TEXT   a line on stderr
  cp:VALUE            a progress marker line "checkpoint:VALUE"
  cpfile:VALUE        write VALUE to $HBWRAP_CHECKPOINT_FILE
  beat                touch $HBWRAP_HEARTBEAT_FILE
  beats:SECS:EVERY    touch the heartbeat file every EVERY s for SECS s, printing nothing
  ticks:N:EVERY       print "tick i" N times, every EVERY s (alive, no progress)
  cps:N:EVERY         print "checkpoint:cp-i" N times, every EVERY s
  numbered:N:EVERY    print "line i" for i in 1..N, every EVERY s
  sleep:SECS          sleep silently
  hang                sleep forever silently
  loop:EVERY          print "working" forever, every EVERY s (alive, no progress)
  exit:CODE           exit with CODE
  ignoreterm          ignore SIGTERM from now on
  grandchild:PIDFILE  start a grandchild that ignores SIGTERM and sleeps; write its pid
  escape:PIDFILE      start a double-forked setsid daemon that sleeps; write its pid
  env:PATH            write the environment as JSON to PATH
  bytes:N:SEED        write N pseudo-random bytes to stdout (binary)
  longline:N          write N bytes of 'x' in 1 MiB chunks, then one newline
  selfkill:SIG        kill itself with signal SIG (a number)
  isatty:PATH         write "True"/"False" (is stdout a tty) to PATH
  pidfile:PATH        write its own pid to PATH
  tag:ANY             no-op (lets the checks find and clean up their processes)

Steps added for hbwrap's own test suite:

  ready               print "READY" (a test waits for it instead of sleeping)
  raw:HEX             write these bytes to stdout, nothing added (no newline)
  rawerr:HEX          the same on stderr
  interleave:N        "out i" on stdout and "err i" on stderr, alternately, N times each
  stdin:PATH          write JSON {"target": where fd 0 points, "isatty": ..., "read": first bytes read} to PATH
  winsize:PATH        write "COLUMNSxLINES" of the terminal on stdout (or "none") to PATH
"""
import json
import os
import random
import signal
import sys
import time


def out(text, stream=None):
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def touch(path):
    with open(path, "a"):
        pass
    now = time.time()
    os.utime(path, (now, now))


def sleeper_forever():
    while True:
        time.sleep(3600)


def spawn_grandchild(pidfile):
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.closerange(3, 256)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        sleeper_forever()
    with open(pidfile, "w") as f:
        f.write(str(pid))


def spawn_escapee(pidfile):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        pid2 = os.fork()
        if pid2 == 0:
            os.close(r)
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            sleeper_forever()
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    daemon_pid = os.read(r, 64).decode()
    os.close(r)
    with open(pidfile, "w") as f:
        f.write(daemon_pid)


def main(steps):
    n = 0
    for step in steps:
        name, _, arg = step.partition(":")
        if name == "count":
            with open(arg, "a") as f:
                f.write(f"{os.getpid()}\n")
            with open(arg) as f:
                n = sum(1 for _ in f)
        elif name == "hangfirst":
            if n <= int(arg):
                sleeper_forever()
        elif name == "failfirst":
            k, code = arg.split(":")
            if n <= int(k):
                sys.exit(int(code))
        elif name == "print":
            out(arg)
        elif name == "err":
            out(arg, sys.stderr)
        elif name == "cp":
            out(f"checkpoint:{arg}")
        elif name == "cpfile":
            with open(os.environ["HBWRAP_CHECKPOINT_FILE"], "w") as f:
                f.write(arg + "\n")
        elif name == "beat":
            touch(os.environ["HBWRAP_HEARTBEAT_FILE"])
        elif name == "beats":
            secs, every = (float(x) for x in arg.split(":"))
            end = time.monotonic() + secs
            while time.monotonic() < end:
                touch(os.environ["HBWRAP_HEARTBEAT_FILE"])
                time.sleep(every)
        elif name in ("ticks", "cps", "numbered"):
            count, every = arg.split(":")
            fmt = {"ticks": "tick {}", "cps": "checkpoint:cp-{}", "numbered": "line {}"}[name]
            for i in range(1, int(count) + 1):
                out(fmt.format(i))
                time.sleep(float(every))
        elif name == "sleep":
            time.sleep(float(arg))
        elif name == "hang":
            sleeper_forever()
        elif name == "loop":
            while True:
                out("working")
                time.sleep(float(arg))
        elif name == "exit":
            sys.exit(int(arg))
        elif name == "ignoreterm":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif name == "grandchild":
            spawn_grandchild(arg)
        elif name == "escape":
            spawn_escapee(arg)
        elif name == "env":
            with open(arg, "w") as f:
                json.dump(dict(os.environ), f)
        elif name == "bytes":
            count, seed = arg.split(":")
            rng = random.Random(int(seed))
            remaining = int(count)
            while remaining:
                chunk = min(remaining, 65536)
                sys.stdout.buffer.write(rng.randbytes(chunk))
                remaining -= chunk
            sys.stdout.buffer.flush()
        elif name == "longline":
            remaining = int(arg)
            block = b"x" * (1 << 20)
            while remaining:
                chunk = min(remaining, len(block))
                sys.stdout.buffer.write(block[:chunk])
                remaining -= chunk
            sys.stdout.buffer.write(b"\n")
            sys.stdout.buffer.flush()
        elif name == "selfkill":
            os.kill(os.getpid(), int(arg))
            time.sleep(5)
        elif name == "isatty":
            with open(arg, "w") as f:
                f.write(str(sys.stdout.isatty()))
        elif name == "pidfile":
            with open(arg, "w") as f:
                f.write(str(os.getpid()))
        elif name == "tag":
            pass
        elif name == "ready":
            out("READY")
        elif name in ("raw", "rawerr"):
            stream = sys.stdout if name == "raw" else sys.stderr
            stream.flush()
            stream.buffer.write(bytes.fromhex(arg))
            stream.buffer.flush()
        elif name == "interleave":
            for i in range(1, int(arg) + 1):
                out(f"out {i}")
                out(f"err {i}", sys.stderr)
        elif name == "stdin":
            import select
            try:
                target = os.readlink("/proc/self/fd/0")
            except OSError as exc:
                target = f"error: {exc}"
            ready_, _, _ = select.select([0], [], [], 0.5)
            data = os.read(0, 100) if ready_ else None
            with open(arg, "w") as f:
                json.dump({"target": target, "isatty": os.isatty(0),
                           "read": None if data is None else data.decode("latin-1")}, f)
        elif name == "winsize":
            try:
                size = os.get_terminal_size(1)
                text = f"{size.columns}x{size.lines}"
            except OSError:
                text = "none"
            with open(arg, "w") as f:
                f.write(text)
        else:
            sys.exit(f"agent.py: unknown step {step!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
