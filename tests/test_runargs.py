"""The fast command-line path (entry.py, runargs.py) against the typer CLI it stands in for.

runargs.parse_run_args must accept only what typer's `run` accepts and read it the same way; whatever it
declines goes to typer. These tests hold the two to one table and compare them on generated command lines.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import typer

from hbwrap import cli
from hbwrap.runargs import FLAGS, MULTI, OFF, ON, VALUE, parse_run_args

try:  # typer >= 0.26 vendors click
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover
    from click import exceptions as cx

RUN = typer.main.get_command(cli.app).commands["run"]


def typer_reading(args: list[str]):
    """(given, name, config) as cli.run would pass them on, or None when typer refuses `args`."""
    try:
        ctx = RUN.make_context("run", list(args))
    except (cx.UsageError, cx.BadParameter):
        return None
    except typer.Exit:  # --help
        return "exit"
    command = ctx.params.get("command")
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in cli._given(ctx, command).items()}
    return given, ctx.params.get("name"), ctx.params.get("config")  # (run_settings takes tuples as lists)


def test_the_table_is_typers_run_command():
    expected: dict[str, tuple[str, str]] = {}
    for param in RUN.params:
        if param.name == "command" or not param.opts[0].startswith("-"):
            continue
        if param.is_flag:
            for opt in param.opts:
                expected[opt] = (param.name, ON)
            for opt in param.secondary_opts:
                expected[opt] = (param.name, OFF)
        else:
            for opt in param.opts:
                expected[opt] = (param.name, MULTI if param.multiple else VALUE)
    assert FLAGS == {k: v for k, v in expected.items() if k not in ("-h", "--help")}


VALUES = ["5s", "", "--", "-", "-x", "--timeout", "a=b", "=", "on-failure", "0", "x y", "-q"]
WORDS = ["true", "sh", "-c", "exit 3", "--", "-", "--timeout", "-q", "x"]
ODD = ["-qv", "-vq", "-h", "--help", "--bogus", "--timeout=", "--quiet=1", "-q=1", "--no-quiet", "--no-pty",
       "--tim", "--resume=yes", "---", "-"]


def generated(rng: random.Random) -> list[str]:
    args: list[str] = []
    for _ in range(rng.randint(0, 6)):
        roll = rng.random()
        if roll < 0.08:
            args.append(rng.choice(ODD))
            continue
        flag = rng.choice(list(FLAGS))
        how = FLAGS[flag][1]
        if how in (ON, OFF):
            args.append(flag)
        elif rng.random() < 0.3:
            args.append(f"{flag}={rng.choice(VALUES)}")
        elif rng.random() < 0.97:
            args += [flag, rng.choice(VALUES)]
        else:
            args.append(flag)  # a missing value, when last
    if rng.random() < 0.85:
        if rng.random() < 0.8:
            args.append("--")
        args += rng.sample(WORDS, rng.randint(0 if rng.random() < 0.1 else 1, 3))
    return args


def test_on_generated_command_lines_it_reads_what_typer_reads_or_declines():
    rng = random.Random(20261201)
    read = declined_ok = 0
    for _ in range(4000):
        args = generated(rng)
        fast, slow = parse_run_args(args), typer_reading(args)
        if fast is None:
            declined_ok += 1
            continue
        assert slow not in (None, "exit"), f"fast path accepted what typer refuses: {args}"
        assert fast == slow, f"{args}: fast {fast} != typer {slow}"
        read += 1
    assert read > 2000 and declined_ok > 200, (read, declined_ok)


@pytest.mark.parametrize("args", [
    ["--", "true"], ["true"], ["-q", "-v", "--", "true"], ["--quiet", "--verbose", "true", "--", "x"],
    ["--timeout", "5s", "--timeout=6s", "--", "sh", "-c", "exit 3"], ["--progress-pattern", "a", "--progress-pattern=b", "x"],
    ["--no-resume", "--resume", "--no-self-heal", "x"], ["--name", "job", "--config", "f.toml", "--", "x"],
    ["--timeout", "--", "true"], ["--", "-x", "--timeout", "1"], ["-", "x"], ["--alert-webhook", "u1", "--alert-webhook", "u2", "x"],
])
def test_typical_command_lines_are_read_like_typer(args):
    fast = parse_run_args(args)
    assert fast is not None and fast == typer_reading(args)


@pytest.mark.parametrize("args", [
    [], ["--"], ["--timeout"], ["-qv", "--", "x"], ["--help"], ["-h"], ["--bogus", "x"], ["--quiet=1", "x"],
    ["--timeout", "5s"], ["-q=1", "x"],
])
def test_what_it_declines_goes_to_typer(args):
    assert parse_run_args(args) is None


def _imported_by(argv: list[str], env: dict) -> dict:
    probe = ("import sys, json, os\n"
             "def _exit(code):\n    raise SystemExit(code)\n"
             "os._exit = _exit\n"  # a run ends with os._exit (entry.finish): turn it back into SystemExit here
             f"sys.argv = ['hbwrap'] + {argv!r}\n"
             "from hbwrap.entry import main\n"
             "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
             "sys.stderr.write('\\n' + json.dumps({'code': code, 'mods': sorted(sys.modules)}) + '\\n')\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60,
                       stdin=subprocess.DEVNULL)
    return json.loads(r.stderr.strip().splitlines()[-1])


def test_beat_and_checkpoint_import_neither_typer_nor_the_state_code(tmp_path):
    env = dict(os.environ, HBWRAP_HEARTBEAT_FILE=str(tmp_path / "hb"), HBWRAP_CHECKPOINT_FILE=str(tmp_path / "cp"))
    interpreter = subprocess.run([sys.executable, "-c", "import sys, json; print(json.dumps(sorted(sys.modules)))"],
                                 capture_output=True, text=True, env=env, timeout=60).stdout
    already = set(json.loads(interpreter)) | {"json", "json.decoder", "json.scanner", "json.encoder"}  # the probe's
    for argv in (["beat"], ["checkpoint", "page-7"]):
        seen = _imported_by(argv, env)
        assert seen["code"] == 0
        added = set(seen["mods"]) - already
        heavy = {m for m in added if m.split(".")[0] in ("typer", "click", "rich", "enum", "dataclasses", "pathlib")
                 or m in ("hbwrap.cli", "hbwrap.jobstore", "hbwrap.errors", "hbwrap.model")}
        assert not heavy, f"{argv}: {sorted(heavy)}"
    assert (tmp_path / "cp").read_text() == "page-7\n" and (tmp_path / "hb").exists()


def test_run_takes_the_fast_path_and_help_the_typer_one(tmp_path):
    env = dict(os.environ, HBWRAP_STATE_DIR=str(tmp_path / "state"))
    env.pop("HBWRAP_CONFIG", None)
    seen = _imported_by(["run", "--name", "fast", "--timeout", "1m", "--", "true"], env)
    assert seen["code"] == 0 and "typer" not in seen["mods"] and "hbwrap.cli" not in seen["mods"]
    seen = _imported_by(["run", "-qv", "--name", "slow", "--", "true"], env)  # bundled flags: typer reads them
    assert seen["code"] == 0 and "hbwrap.cli" in seen["mods"]


def test_completion_always_goes_to_typer(tmp_path):
    env = dict(os.environ, _HBWRAP_COMPLETE="bash_complete", COMP_WORDS="hbwrap be", COMP_CWORD="1")
    seen = _imported_by(["beat"], env)
    assert "hbwrap.cli" in seen["mods"]


def test_both_paths_give_the_same_errors(hb):
    """A bad value is reported by the shared option code, the same on the fast and the typer path."""
    fast = hb.run("run", "--timeout", "soon", "--", "true")
    slow = hb.run("run", "-qv", "--timeout", "soon", "--", "true")
    assert fast.returncode == slow.returncode == 2
    assert fast.err.strip() == slow.err.strip() and "--timeout" in fast.err and len(fast.err.strip().splitlines()) == 1
    missing = hb.run("run", "--timeout")
    assert missing.returncode == 2 and "requires an argument" in missing.err and "Traceback" not in missing.err
