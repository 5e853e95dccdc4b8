"""The typer app: parse, build options, call the core, map the outcome to an exit code. No logic here."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from hbwrap import __version__
from hbwrap.errors import ExitCode, HbwrapError, UsageError

app = typer.Typer(
    name="hbwrap",
    help="A watchdog for unattended long-running jobs: detects hangs and stalls, kills the whole process "
         "tree, restarts it from the last checkpoint, or gives up loudly.",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

RUN_HELP = """Run COMMAND under supervision: kill and restart it when it stops showing signs of life or progress.

\b
Examples:
  hbwrap run --name reddit-3am --timeout 15m --response-timeout 2m -- ./post_comment.sh
  hbwrap run --progress-timeout 20m --restart on-failure -- python research.py
  hbwrap run --quiet --response-timeout 5m -- ./nightly.sh     # cron: output only on failure

\b
Durations: 90, 1.5, 250ms, 90s, 15m, 2h, 1d, 1h30m.  Sizes: 10MB, 1GB, 500KiB.
Exit codes: the command's own; 124 stall/--timeout/--deadline; 125 hbwrap failed;
126/127 not executable/not found; 128+S killed by signal S (or hbwrap got SIGTERM/SIGINT/SIGHUP); 2 usage.
"""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hbwrap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """hbwrap: a watchdog for unattended long-running jobs."""


def _given(ctx: typer.Context, command: Optional[List[str]]) -> dict:
    """Only the options typed on the command line, so that the config file is not overridden by defaults."""
    given = {key: value for key, value in ctx.params.items()
             if key not in ("command", "config", "name") and ctx.get_parameter_source(key) is not None
             and ctx.get_parameter_source(key).name == "COMMANDLINE"}
    if command:
        given["command"] = list(command)
    return given


CONFIG_OPTION = typer.Option(None, "--config", help="TOML defaults and jobs (default $HBWRAP_CONFIG, else $XDG_CONFIG_HOME/hbwrap/config.toml if it exists).")


@app.command(context_settings={"allow_interspersed_args": False}, help=RUN_HELP, no_args_is_help=False)
def run(
    ctx: typer.Context,
    command: Optional[List[str]] = typer.Argument(None, metavar="-- COMMAND [ARG...]", show_default=False),
    name: Optional[str] = typer.Option(None, "--name", help="Job name [A-Za-z0-9._-]{1,64}; default: derived from the command line."),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help="Where job state lives (default $HBWRAP_STATE_DIR, $XDG_STATE_HOME/hbwrap, ~/.local/state/hbwrap)."),
    timeout: Optional[str] = typer.Option(None, "--timeout", help="Wall-clock limit of one attempt."),
    deadline: Optional[str] = typer.Option(None, "--deadline", help="Wall-clock limit of the whole run, all attempts and back-off included."),
    response_timeout: Optional[str] = typer.Option(None, "--response-timeout", help="Longest time without a sign of life (output, heartbeat, marker, passing probe)."),
    progress_timeout: Optional[str] = typer.Option(None, "--progress-timeout", help="Longest time without progress (marker line or checkpoint-file change)."),
    start_grace: Optional[str] = typer.Option(None, "--start-grace", help="Start the response and progress clocks this long after each attempt starts. [default: 0]"),
    progress_pattern: Optional[List[str]] = typer.Option(None, "--progress-pattern", help="Regex for progress-marker lines (repeatable); group 1 or (?P<checkpoint>...) is the checkpoint. [default: ^\\s*checkpoint[:=]\\s*(\\S.*?)\\s*$]"),
    checkpoint_file: Optional[str] = typer.Option(None, "--checkpoint-file", help="A change of its content is progress; its last non-empty line is the checkpoint. [default: <job dir>/checkpoint]"),
    heartbeat_file: Optional[str] = typer.Option(None, "--heartbeat-file", help="A change of its mtime is a sign of life. [default: <job dir>/heartbeat]"),
    probe: Optional[str] = typer.Option(None, "--probe", help="Liveness probe run with sh -c every --probe-interval."),
    probe_interval: Optional[str] = typer.Option(None, "--probe-interval", help="[default: 30s]"),
    probe_timeout: Optional[str] = typer.Option(None, "--probe-timeout", help="[default: 10s]"),
    probe_failures: Optional[str] = typer.Option(None, "--probe-failures", help="Consecutive probe failures that make a stall. [default: 3]"),
    kill_signal: Optional[str] = typer.Option(None, "--kill-signal", help="First signal sent to the child group when stopping it. [default: TERM]"),
    grace: Optional[str] = typer.Option(None, "--grace", help="Wait this long after the first signal, then SIGKILL the group and every escaped descendant. [default: 10s]"),
    restart: Optional[str] = typer.Option(None, "--restart", help="never | on-stall | on-failure. [default: on-stall]"),
    max_restarts: Optional[str] = typer.Option(None, "--max-restarts", help="Restarts allowed in one run; the next failure escalates. [default: 3]"),
    backoff: Optional[str] = typer.Option(None, "--backoff", help="Wait before restart k: backoff × 2^(k-1), jittered to 50-100%. [default: 1s]"),
    backoff_max: Optional[str] = typer.Option(None, "--backoff-max", help="[default: 5m]"),
    retry_exit_codes: Optional[str] = typer.Option(None, "--retry-exit-codes", help="With on-failure, retry only these exit codes (e.g. 1,2,75). [default: any non-zero]"),
    fatal_pattern: Optional[List[str]] = typer.Option(None, "--fatal-pattern", help="Regex; a matching output line makes this attempt's failure non-retryable (repeatable)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Give the next attempt the last checkpoint in HBWRAP_RESUME_FROM."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Cron mode: no output unless the run fails, then all of it (capped) and the log's path."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Say more on stderr (e.g. when an overlapping run is skipped)."),
    pty: bool = typer.Option(False, "--pty", help="Run the command on a pseudo-terminal (for programs that buffer when not on a terminal)."),
    log_max_size: Optional[str] = typer.Option(None, "--log-max-size", help="Rotate the job's output log beyond this size; one rotated file is kept. [default: 50MB]"),
    alert_cmd: Optional[str] = typer.Option(None, "--alert-cmd", help="Run with sh -c for each alerted event; details in HBWRAP_EVENT, HBWRAP_REASON, HBWRAP_EVENT_JSON, ... (never spliced into the text)."),
    alert_webhook: Optional[List[str]] = typer.Option(None, "--alert-webhook", help="POST each alerted event to URL (repeatable; or $HBWRAP_ALERT_WEBHOOK, space-separated)."),
    webhook_format: Optional[str] = typer.Option(None, "--webhook-format", help="json | slack | discord. [default: json]"),
    alert_on: Optional[str] = typer.Option(None, "--alert-on", help="Events that alert: all, or a comma list of event names. [default: stall,escalate,takeover]"),
    ping_url: Optional[str] = typer.Option(None, "--ping-url", help="healthchecks.io-compatible pings: URL/start, URL, URL/fail (or $HBWRAP_PING_URL)."),
    config: Optional[str] = CONFIG_OPTION,
    if_running: Optional[str] = typer.Option(None, "--if-running", help="When a live supervisor already runs this job: skip (exit 0), fail (exit 75) or wait for it, then run. [default: skip]"),
    lease: Optional[str] = typer.Option(None, "--lease", help="Renew the supervisor's lease at least every lease/3; a supervisor whose lease is older is hung and is taken over. [default: 30s]"),
) -> int:
    from hbwrap.configfile import run_settings
    from hbwrap.options import parse_if_running
    from hbwrap.supervisor import Supervisor

    opts, settings, _origins, _config = run_settings(_given(ctx, command), name, config)
    return Supervisor(opts).run(if_running=parse_if_running(settings["if-running"]))


def _state_dir(state_dir: Optional[str]):
    from hbwrap.jobstore import StateDir
    from hbwrap.options import default_state_dir

    return StateDir(state_dir) if state_dir else StateDir(default_state_dir())


STATE_DIR_OPTION = typer.Option(None, "--state-dir", help="Where job state lives (default $HBWRAP_STATE_DIR, $XDG_STATE_HOME/hbwrap, ~/.local/state/hbwrap).")


@app.command()
def status(
    name: Optional[str] = typer.Argument(None, help="Only this job."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects (ISO 8601 UTC times)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh the table every second until Ctrl-C (terminal only)."),
    state_dir: Optional[str] = STATE_DIR_OPTION,
    fleet: bool = typer.Option(False, "--fleet", help="Every job in the shared lease store instead: holder host, generation, status, lease, checkpoint, last progress."),
    lease_url: Optional[str] = typer.Option(None, "--lease-url", help="The shared lease store for --fleet, postgresql://... (default $HBWRAP_LEASE_URL)."),
) -> int:
    """Show jobs: status, attempt, pid, uptime, last output and progress, checkpoint, next deadline.

    Running and failing jobs come first. A colour table on a terminal, plain aligned columns otherwise.
    With --fleet: the jobs of the shared lease store (all hosts), ages by the database server's clock.

    \b
    Examples:
      hbwrap status
      hbwrap status --watch
      hbwrap status reddit-3am --json | jq .[0].status
      hbwrap status --fleet --lease-url postgresql://hbwrap@db.example/jobs
    """
    if fleet or lease_url is not None:
        if not fleet:
            raise UsageError("status: --lease-url goes with --fleet")
        if watch:
            raise UsageError("status: --fleet cannot --watch")
        url = lease_url if lease_url is not None else os.environ.get("HBWRAP_LEASE_URL")
        if not url:
            raise UsageError("status --fleet needs --lease-url URL or $HBWRAP_LEASE_URL")
        from hbwrap.fleet import print_fleet
        from hbwrap.options import check_name

        return print_fleet(url, None if name is None else check_name(name, "NAME"), as_json)
    from hbwrap import views

    views.print_status(_state_dir(state_dir), name, as_json, watch)
    return 0


@app.command()
def events(
    name: str = typer.Argument(..., help="The job."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, as stored."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until the job's run ends."),
    lines: Optional[int] = typer.Option(None, "-n", "--lines", min=0, help="Only the last N events."),
    state_dir: Optional[str] = STATE_DIR_OPTION,
) -> int:
    """Show the job's event log (run_start, stall, kill, restart, ...).

    \b
    Examples:
      hbwrap events reddit-3am -n 20
      hbwrap events reddit-3am --json | jq 'select(.event=="stall")'
    """
    from hbwrap import views

    views.print_events(_state_dir(state_dir).existing_job(name), as_json, lines, follow)
    return 0


@app.command()
def logs(
    name: str = typer.Argument(..., help="The job."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the job's run ends."),
    lines: Optional[int] = typer.Option(None, "-n", "--lines", min=0, help="Only the last N lines."),
    state_dir: Optional[str] = STATE_DIR_OPTION,
) -> int:
    """Show the job's stored output (stdout and stderr as they arrived).

    \b
    Examples:
      hbwrap logs reddit-3am -n 50
      hbwrap logs reddit-3am --follow
    """
    from hbwrap import views

    views.print_logs(_state_dir(state_dir).existing_job(name), lines, follow)
    return 0


@app.command()
def watch(
    name: str = typer.Argument(..., help="The job."),
    state_dir: Optional[str] = STATE_DIR_OPTION,
) -> int:
    """Take over supervision of a job whose supervisor died or hung (no command line needed).

    Exits as `run` would; 75 when a live supervisor holds the job; 1 when there is nothing to take over.

    \b
    Examples:
      hbwrap watch reddit-3am
      */5 * * * * hbwrap watch reddit-3am    # re-attach within 5 minutes of a watchdog failure
    """
    from hbwrap.supervisor import watch_job

    return watch_job(_state_dir(state_dir), name)


@app.command()
def stop(
    name: str = typer.Argument(..., help="The job."),
    timeout: Optional[str] = typer.Option(None, "--timeout", help="How long to wait for the job to stop. [default: its --grace + 15s]"),
    state_dir: Optional[str] = STATE_DIR_OPTION,
) -> int:
    """Stop a job: its command group gets the kill signal, then SIGKILL after --grace; no restart follows.

    Works with a live supervisor (asks it; it exits 143) and with a dead one (stops the orphaned group).
    Exits 0 once the job is stopped, 1 for an unknown job or if it did not stop within --timeout.

    \b
    Examples:
      hbwrap stop reddit-3am
      hbwrap stop research --timeout 1m
    """
    from hbwrap.options import parse_duration
    from hbwrap.supervisor import stop_job

    timeout_s = parse_duration(timeout, "--timeout") if timeout is not None else None
    return stop_job(_state_dir(state_dir), name, timeout_s)


config_app = typer.Typer(help="Show the effective settings of a job, or write a starter config file.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def config_show(
    ctx: typer.Context,
    origin: bool = typer.Option(False, "--origin", help="Say where each value comes from (flag, file table, default)."),
) -> int:
    """Print the effective settings (built-in defaults + config file + flags) as TOML. Takes `run`'s options.

    \b
    Examples:
      hbwrap config show --name reddit-3am
      hbwrap config show --name research --origin --progress-timeout 30m
    """
    from hbwrap.configfile import run_settings, to_toml

    run_command = typer.main.get_command(app).commands["run"]  # parse the arguments exactly as `run` would
    run_ctx = run_command.make_context("run", list(ctx.args), parent=ctx.parent)
    params = run_ctx.params
    opts, settings, origins, _config = run_settings(
        _given(run_ctx, params.get("command")), params.get("name"), params.get("config"), need_command=False)
    settings["state-dir"] = opts.state_dir
    from hbwrap.alerts import mask_url

    settings["alert-webhook"] = [mask_url(u) for u in settings.get("alert-webhook") or []]
    if settings.get("ping-url"):
        settings["ping-url"] = mask_url(settings["ping-url"])
    job = opts.name if params.get("name") or params.get("command") else None
    sys.stdout.write(to_toml(settings, origins if origin else None, job=job))
    return 0


@config_app.command("init")
def config_init(
    path: Optional[str] = typer.Argument(None, help="Where to write it [default: $HBWRAP_CONFIG, else $XDG_CONFIG_HOME/hbwrap/config.toml]."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> int:
    """Write a starter config file with documented example jobs (never overwrites without --force).

    \b
    Examples:
      hbwrap config init
      hbwrap config init ./hbwrap.toml --force
    """
    from pathlib import Path

    from hbwrap.configfile import default_config_path, write_starter

    target = Path(path) if path else default_config_path()
    write_starter(target, force)
    sys.stderr.write(f"hbwrap: wrote {target}\n")
    return 0


@app.command()
def metrics(
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write to FILE atomically (for node_exporter's textfile collector) instead of stdout."),
    state_dir: Optional[str] = STATE_DIR_OPTION,
) -> int:
    """All jobs in the Prometheus text format (metric names hbwrap_*, label job_name).

    \b
    Examples:
      hbwrap metrics
      * * * * * hbwrap metrics --output /var/lib/node_exporter/textfile/hbwrap.prom
    """
    from hbwrap import views
    from hbwrap.metrics import metrics_text, write_atomic

    text = metrics_text(views.metrics_rows(_state_dir(state_dir)))
    if output:
        write_atomic(output, text)
    else:
        sys.stdout.write(text)
    return 0


@app.command()
def checkpoint(value: str = typer.Argument(..., help="The checkpoint value, e.g. page-42.")) -> int:
    """Record progress from inside a supervised command (writes $HBWRAP_CHECKPOINT_FILE).

    \b
    Example (in a script run by hbwrap):
      hbwrap checkpoint "page-$page"
    """
    from hbwrap.jobstore import write_checkpoint

    write_checkpoint(value)
    return 0


@app.command()
def beat() -> int:
    """Give a sign of life from inside a supervised command (touches $HBWRAP_HEARTBEAT_FILE).

    \b
    Example (in a script run by hbwrap):
      while work; do hbwrap beat; done
    """
    from hbwrap.jobstore import touch_heartbeat

    touch_heartbeat()
    return 0


def _err(text: str) -> None:
    sys.stderr.write(f"hbwrap: {text}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one `hbwrap: ...` line and the documented exit code for every user error."""
    try:  # typer >= 0.29 vendors click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as cx

    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="hbwrap", standalone_mode=False)
    except cx.UsageError as exc:
        message = exc.format_message().replace("\n", " ").strip()
        if message:  # empty: `hbwrap` alone, and the help has been printed already
            _err(f"error: {message}")
        code = ExitCode.USAGE
    except typer.Abort:
        _err("interrupted")
        code = 130
    except typer.Exit as exc:
        code = exc.exit_code
    except cx.ClickException as exc:
        _err(f"error: {exc.format_message()}")
        code = exc.exit_code
    except HbwrapError as exc:
        _err(str(exc) if not isinstance(exc, UsageError) else f"error: {exc}")
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    sys.exit(int(code or 0))
