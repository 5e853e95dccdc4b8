"""Docs are tested: every command and every `run` option is in the README and in --help."""
import re
import subprocess
from pathlib import Path

import pytest
import typer

from conftest import hbwrap_bin
from hbwrap import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
ROOT = typer.main.get_command(cli.app)
COMMANDS = sorted(ROOT.commands)
RUN_OPTIONS = sorted({opt for p in ROOT.commands["run"].params for opt in p.opts if opt.startswith("--")})


def help_text(*args):
    r = subprocess.run([hbwrap_bin(), *args, "--help"], capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_documented_with_examples(command):
    assert re.search(rf"hbwrap {command}\b", README), f"README does not show `hbwrap {command}`"
    text = help_text(command)
    assert "Example" in text or command == "config", f"`hbwrap {command} --help` has no examples"


@pytest.mark.parametrize("option", RUN_OPTIONS)
def test_every_run_option_is_in_the_readme_and_help(option):
    assert f"`{option}" in README or f"{option}" in README, f"README does not document {option}"
    assert option in help_text("run"), f"`hbwrap run --help` does not show {option}"


def test_readme_first_screen_has_the_two_setup_commands():
    first_screen = "\n".join(README.splitlines()[:20])
    assert "./scripts/demo" in first_screen and "./scripts/test" in first_screen


def test_spec_exit_codes_are_in_the_readme():
    for code in ("124", "125", "126", "127", "75", "128+"):
        assert code in README


# The panels of `hbwrap run --help` and the metavars a value may have (hbwrap.cli's constants, spelled out
# here so that renaming one is a visible change).
RUN_PANELS = ("Deadlines and signs of life", "Stopping", "Restarts", "Alerts and pings", "Takeover and leases",
              "Output and files")
METAVARS = {"DUR", "SIZE", "REGEX", "CMD", "URL", "SIG", "N", "PATH", "LIST", "MODE", "NAME", "DIR", "FILE",
            "FORMAT"}
RUN_PARAMS = [p for p in ROOT.commands["run"].params if p.name != "command"]


@pytest.mark.parametrize("param", RUN_PARAMS, ids=lambda p: p.opts[0])
def test_every_run_option_has_a_panel_and_a_real_metavar(param):
    assert getattr(param, "rich_help_panel", None) in RUN_PANELS, f"{param.opts[0]} is in no panel of run --help"
    if not param.is_flag:
        assert param.metavar in METAVARS, f"{param.opts[0]} has metavar {param.metavar!r}, not one of {METAVARS}"


@pytest.mark.parametrize("columns", [80, 120])
def test_run_help_renders_in_panels_at_the_terminal_width(columns):
    r = subprocess.run([hbwrap_bin(), "run", "--help"], capture_output=True, text=True,
                       env={"COLUMNS": str(columns), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns, "\n".join(l for l in lines if len(l) > columns)
    titles = [line.split("─ ", 1)[1].split(" ─", 1)[0] for line in lines if line.startswith("╭─ ")]
    assert titles == ["Arguments", "Options", *RUN_PANELS], titles
    assert "<str>" not in r.stdout and "<int" not in r.stdout
    # defaults written into the help survive rich markup (a bare `[default: x]` would vanish)
    flat = " ".join(r.stdout.replace("│", " ").split())
    for shown in ("[default: 30s]", "[default: on-stall]", "[default: TERM]", "[default: 50MB]", "[default: 0]"):
        assert shown in flat, shown


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "config"] + ["config show", "config init"])
def test_no_command_help_shows_a_bare_type_as_metavar(command):
    text = help_text(*command.split())
    assert "<str>" not in text and "<int" not in text and "TEXT" not in text, text


def test_response_timeout_help_does_not_count_a_probe_as_a_sign_of_life():
    flat = " ".join(help_text("run").replace("│", " ").split())
    help_row = flat.split("--response-timeout DUR", 1)[1].split("--progress-timeout DUR")[0]
    assert "A passing probe is not one" in help_row, help_row
    readme_row = next(line for line in README.splitlines() if line.startswith("| `--response-timeout"))
    assert "passing probe" not in readme_row.replace("not a passing probe", ""), readme_row
