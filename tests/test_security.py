"""Modes and a hostile state dir: nothing hbwrap creates is open to others, and it never writes through
(or reads through) a file that is not a regular file of its own in a state dir that only its user can change."""
import os
import stat
import subprocess

import pytest


def walk_modes(top):
    """(path, mode) of `top` and everything below it."""
    found = [(str(top), stat.S_IMODE(os.lstat(top).st_mode))]
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            found.append((path, stat.S_IMODE(os.lstat(path).st_mode)))
    return found


def umask0():
    os.umask(0)


def test_every_directory_and_file_created_under_umask_000_is_private(hb):
    base = hb.tmp / "b"
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)
    env = {**hb.env, "HBWRAP_STATE_DIR": str(base / "local" / "state" / "hbwrap")}
    script = (f"hbwrap checkpoint one; hbwrap beat; echo checkpoint:two; head -c 3000 /dev/zero; "
              f"echo; echo {hb.tag}")
    env["PATH"] = os.path.dirname(hb.bin) + os.pathsep + env.get("PATH", "")
    r = hb.run("run", "--name", "private", "--log-max-size", "1000", "--", "sh", "-c", script, env=env,
               preexec_fn=umask0)
    assert r.returncode == 0, r
    created = walk_modes(base / "local")
    assert len(created) > 8, created
    open_to_others = [(p, oct(m)) for p, m in created if m & 0o077]
    assert not open_to_others, open_to_others
    dirs = [(p, oct(m)) for p, m in created if os.path.isdir(p)]
    assert all(m == "0o700" for _, m in dirs), dirs
    assert (base / "local" / "state" / "hbwrap" / "private" / "output.log.1").exists()  # rotation ran too


def test_config_init_creates_private_parent_directories_under_umask_000(hb):
    target = hb.tmp / "cfg" / "deep" / "er" / "config.toml"
    r = hb.run("config", "init", str(target), preexec_fn=umask0)
    assert r.returncode == 0, r
    for path, mode in walk_modes(hb.tmp / "cfg"):
        assert mode & 0o077 == 0, (path, oct(mode))
