"""hbwrap.libc: prctl and inotify through _ctypes (no ctypes package), checked on the real kernel."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hbwrap import libc
from hbwrap.inotify import Inotify


def test_a_subreaper_adopts_the_orphans_of_its_descendants():
    # the probe makes itself a subreaper, then a child of it forks a grandchild and exits at once: the
    # orphaned grandchild must be reparented to the probe, not to init
    probe = """
import json, os, sys, time
from hbwrap import procs
ok = procs.set_child_subreaper()
r, w = os.pipe()
child = os.fork()
if child == 0:
    parent = os.getpid()
    if os.fork() == 0:
        os.close(r)
        end = time.monotonic() + 10
        while os.getppid() == parent and time.monotonic() < end:  # until the child's exit orphans it
            time.sleep(0.01)
        os.write(w, str(os.getppid()).encode())
        os._exit(0)
    os._exit(0)
os.close(w)
os.waitpid(child, 0)
ppid = int(os.read(r, 32) or b"0")
print(json.dumps({"ok": ok, "me": os.getpid(), "grandchild_parent": ppid,
                  "ctypes": "ctypes" in sys.modules}))
"""
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["ok"] is True and got["grandchild_parent"] == got["me"], got
    assert got["ctypes"] is False  # _ctypes did it


def test_inotify_reports_the_changed_names_and_a_failed_watch_is_an_oserror(tmp_path):
    watcher = Inotify()
    try:
        watcher.watch_dir(str(tmp_path))
        (tmp_path / "beat").write_text("x")
        assert (str(tmp_path), "beat") in watcher.read()
        assert watcher.read() == set()
        with pytest.raises(OSError, match="inotify_add_watch failed for"):
            watcher.watch_dir(str(tmp_path / "missing"))
    finally:
        watcher.close()


def test_a_symbol_libc_lacks_is_an_oserror():
    with pytest.raises(OSError):
        libc.call("hbwrap_no_such_function")
