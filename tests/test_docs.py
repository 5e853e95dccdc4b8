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
