#!/usr/bin/env python3
"""An example "agent" for the hbwrap demo: it works through items, prints a checkpoint after each one,
and on its first attempt hangs after item 3 (like a browser stuck on a loading screen).

Run under hbwrap it is detected, killed, restarted, and resumes after its last checkpoint:

    hbwrap run --response-timeout 2s -- python3 scripts/example_agent.py
"""
import os
import sys
import time

ITEMS = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("DEMO_ITEMS", "8"))
HANG_AFTER = 3


def main() -> None:
    attempt = os.environ.get("HBWRAP_ATTEMPT", "1")
    resume = os.environ.get("HBWRAP_RESUME_FROM")  # e.g. "item-3"
    start = int(resume.split("-")[1]) + 1 if resume else 1
    if resume:
        print(f"agent: attempt {attempt}, resuming after {resume}", flush=True)
    else:
        print(f"agent: attempt {attempt}, starting from item 1", flush=True)
    for item in range(start, ITEMS + 1):
        time.sleep(0.3)
        print(f"agent: processed item {item} of {ITEMS}", flush=True)
        print(f"checkpoint: item-{item}", flush=True)
        if attempt == "1" and item == HANG_AFTER:
            print("agent: waiting for the page to load...", flush=True)
            while True:  # hangs silently, forever
                time.sleep(3600)
    print("agent: all items done", flush=True)


if __name__ == "__main__":
    main()
