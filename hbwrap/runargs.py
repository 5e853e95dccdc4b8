"""`hbwrap run`'s command line read without the CLI framework: the cron-tick path pays for no typer import.

It accepts only what typer's `run` command accepts and reads it the same way (tests/test_runargs.py holds
the two to the same table and compares them on thousands of generated command lines): long options in
the `--opt VALUE` and `--opt=VALUE` forms, the flags and their `--no-` forms, `-q` and `-v` alone, `--`,
and the command, which starts at `--` or at the first word that is not an option. Anything else (help,
completion, bundled short flags, unknown or misspelled options, a missing value or command) returns None
and the typer CLI takes the whole command line, so its help and its error messages are the only ones.
"""
from __future__ import annotations

from hbwrap.config_keys import RUN_KEYS

VALUE, MULTI, ON, OFF = "value", "multi", "on", "off"
NEGATABLE = frozenset({"resume", "self-heal"})  # the flags that have a --no- form
SHORT = {"-q": "quiet", "-v": "verbose"}
LIST_KINDS = frozenset({"regex-list", "string-list"})  # repeatable on the command line


def _flag_table() -> dict[str, tuple[str, str]]:
    """Every option of `hbwrap run` -> (its parameter name, how it takes its value)."""
    table: dict[str, tuple[str, str]] = {"--name": ("name", VALUE), "--config": ("config", VALUE)}
    for key, kind in RUN_KEYS.items():
        if key == "command":
            continue
        param = key.replace("-", "_")
        if kind == "bool":
            table[f"--{key}"] = (param, ON)
            if key in NEGATABLE:
                table[f"--no-{key}"] = (param, OFF)
        else:
            table[f"--{key}"] = (param, MULTI if kind in LIST_KINDS else VALUE)
    for short, key in SHORT.items():
        table[short] = (key, ON)
    return table


FLAGS = _flag_table()


def parse_run_args(args: list[str]) -> tuple[dict, str | None, str | None] | None:
    """(given, name, config) as `cli.run` builds them for `run_settings`, or None to leave `args` to typer.

    `given` holds only the options typed, under their parameter names, lists for repeatable options (in
    the order given), the last value for the others, and `command`.
    """
    given: dict = {}
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            i += 1
            break
        if token[:1] != "-" or token == "-":
            break
        flag, eq, value = token.partition("=")
        spec = FLAGS.get(flag)
        if spec is None or (eq and flag in SHORT):
            return None
        param, how = spec
        if how in (ON, OFF):
            if eq:
                return None
            given[param] = how == ON
        else:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            if how == MULTI:
                given.setdefault(param, []).append(value)
            else:
                given[param] = value
        i += 1
    command = args[i:]
    if not command:
        return None
    name, config = given.pop("name", None), given.pop("config", None)
    given["command"] = list(command)
    return given, name, config
