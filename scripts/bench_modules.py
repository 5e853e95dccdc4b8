#!/usr/bin/env python3
"""Costs of the incident/activity/repeat building blocks alone (no supervisor): for the README and scripts/bench.

    .venv/bin/python scripts/bench_modules.py [--quick]

Rows: incident snapshot of a 50-process tree (target <= 50 ms); sample_tree of the same tree;
RepeatDetector.feed on the benchmark's numbered text (one line once digits are masked), on varied
progressing text and on a retry loop with hex ids, in 256 KiB chunks (the supervisor's read size).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hbwrap import incident, procs, proctable  # noqa: E402
from hbwrap.activity import sample_tree  # noqa: E402
from hbwrap.repeat import bench_feed  # noqa: E402

BODY = b"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut"
WORDS = (b"alpha beta gamma delta step file read write json fetch page user token request done parse render "
         b"upload queue worker shard batch commit merge index search crawl http error ok").split()


def texts() -> dict[str, bytes]:
    rng = random.Random(1)
    return {
        "numbered (bench text)": b"".join(b"%08d %s\n" % (i, BODY[:90]) for i in range(10486)),
        "varied (progressing)": b"".join(b"%s %s %s %s item %d of %d\n" % (*(rng.choice(WORDS) for _ in range(4)), i, 10486)
                                         for i in range(10486)),
        "retry loop, hex ids": b"".join(b"retry %d failed: 429 id=%s\n" % (i, os.urandom(8).hex().encode())
                                        for i in range(24000)),
    }


def bench_sample_tree(n: int, runs: int) -> float:
    proc = subprocess.Popen([sys.executable, "-c", incident._BENCH_TREE, str(n)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.stdout.readline()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sample_tree([proc.pid])
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)
    finally:
        procs.killpg_quietly(proc.pid, 9)
        proc.wait()
        proc.stdout.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, less text")
    args = ap.parse_args()
    runs, total = (5, 32 << 20) if args.quick else (20, 256 << 20)
    snap = incident.bench_snapshot(50, runs)
    print(f"processes on this machine: {len(proctable.proc_table())}")
    print(f"incident snapshot, {snap['processes']} processes: median {snap['median_ms']} ms, "
          f"max {snap['max_ms']} ms, CPU {snap['cpu_median_ms']} ms (target <= 50 ms)")
    print(f"sample_tree, 50 processes: median {bench_sample_tree(50, runs):.2f} ms")
    for name, text in texts().items():
        print(f"RepeatDetector.feed, {name}: {bench_feed(text, total, 256 * 1024):.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
