"""The `hbwrap` console script: what runs on every cron tick and in every job's loop starts without typer.

`hbwrap beat`, `hbwrap checkpoint VALUE` and `hbwrap run` with a command line runargs.py reads go
straight to their code: importing the CLI framework alone costs more than these commands do. Everything
else (help, completion, the other commands, any command line the fast path does not read) goes to the
typer app in cli.py, so help, completion and usage errors are typer's, and the same, on both paths.
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Console entry point (and `python -m hbwrap`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = None if "_HBWRAP_COMPLETE" in os.environ else _fast_command(args)
    if command is None:
        from hbwrap.cli import main as cli_main

        cli_main(args)
    finish(command, hard_exit=args[:1] == ["run"])


def _fast_command(args: list[str]):
    """The function that carries out `args` without the CLI framework, or None."""
    if args == ["beat"]:
        from hbwrap.jobfiles import touch_heartbeat

        return touch_heartbeat
    if len(args) == 2 and args[0] == "checkpoint" and args[1][:1] != "-":
        from hbwrap.jobfiles import write_checkpoint

        return lambda: write_checkpoint(args[1])
    if args[:1] == ["run"]:
        from hbwrap.runargs import parse_run_args

        parsed = parse_run_args(args[1:])
        if parsed is not None:
            return lambda: run_command(*parsed)
    return None


def run_command(given: dict, name: str | None, config: str | None) -> int:
    """`hbwrap run`: the flags typed (`given`, parameter names, with `command`) over the config file.

    The garbage collector is off while the supervisor starts (its imports allocate much and free little:
    collections then are wasted milliseconds); the loop turns it back on (Supervisor._loop).
    """
    import gc

    gc.disable()
    from hbwrap.config_merge import run_settings
    from hbwrap.options import parse_if_running
    from hbwrap.supervisor import Supervisor

    opts, settings, _origins, _config = run_settings(given, name, config)
    return Supervisor(opts).run(if_running=parse_if_running(settings["if-running"]))


def _err(text: str) -> None:
    try:
        sys.stderr.write(f"hbwrap: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def finish(command, hard_exit: bool = False) -> None:
    """Run `command` and exit with its code: one `hbwrap: ...` line and the documented code for every
    error the user can act on (SPEC §5), 130 on Ctrl-C, 141 when stdout is a closed pipe.

    `hard_exit` (a run, whose supervisor has closed its files, threads and pipes by then): os._exit once
    stdout and stderr are flushed, sparing the interpreter's teardown of every module, ~10 ms of each
    `hbwrap run -- true`.
    """
    try:
        code = command()
    except Exception as exc:
        from hbwrap.errors import HbwrapError, UsageError  # imported only when needed: beat needs no enum

        if not isinstance(exc, HbwrapError):
            raise
        _err(f"error: {exc}" if isinstance(exc, UsageError) else str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    if hard_exit:
        os._exit(int(code or 0))
    sys.exit(int(code or 0))
