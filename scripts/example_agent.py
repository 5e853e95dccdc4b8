#!/usr/bin/env python3
"""An example "agent" for the hbwrap demo (standard library only).

It works through items 1..N, printing a progress marker `checkpoint:item-K` after each one. On its
first attempt (HBWRAP_ATTEMPT=1) it hangs silently after item 3, like a browser stuck on a loading
screen. Under hbwrap the silence is noticed, the agent is killed and restarted, and the next attempt
reads HBWRAP_RESUME_FROM (e.g. "item-3") and carries on after that item:

    hbwrap run --response-timeout 2s -- python3 scripts/example_agent.py [N]

N (the number of items, default 8) comes from the first argument or $DEMO_ITEMS.
"""
import os
import sys
import time

HANG_AFTER = 3  # item after which the first attempt hangs
SECONDS_PER_ITEM = 0.3


def item_count() -> int:
    raw = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DEMO_ITEMS", "8")
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 1:
        sys.exit(f"usage: example_agent.py [N]  (N: number of items, a positive integer; got {raw!r})")
    return n


def first_item(resume_from: str | None) -> int:
    """The item to start with: 1, or the one after the checkpoint "item-K" we are resuming from."""
    if not resume_from:
        return 1
    try:
        return int(resume_from.rsplit("-", 1)[1]) + 1
    except (IndexError, ValueError):
        print(f"agent: cannot make sense of checkpoint {resume_from!r}; starting over", flush=True)
        return 1


def main() -> None:
    items = item_count()
    attempt = os.environ.get("HBWRAP_ATTEMPT", "1")
    resume_from = os.environ.get("HBWRAP_RESUME_FROM")
    start = first_item(resume_from)

    if start > 1:
        print(f"agent: attempt {attempt}: resuming after {resume_from}", flush=True)
    else:
        print(f"agent: attempt {attempt}: starting with item 1 of {items}", flush=True)

    for item in range(start, items + 1):
        time.sleep(SECONDS_PER_ITEM)  # the actual "work"
        print(f"agent: processed item {item} of {items}", flush=True)
        print(f"checkpoint:item-{item}", flush=True)  # progress marker hbwrap recognises
        if attempt == "1" and item == HANG_AFTER:
            print("agent: waiting for the next page to load...", flush=True)
            while True:  # ...which never comes: hang silently, forever
                time.sleep(3600)

    print(f"agent: all {items} items done", flush=True)


if __name__ == "__main__":
    main()
