"""The typer app: parse, build options, call the core, map the outcome to an exit code. No logic here."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from hbwrap import __version__
from hbwrap.errors import ExitCode, UsageError

try:  # typer >= 0.26 vendors click
    from typer._click.types import StringParamType
except ImportError:  # pragma: no cover - older typer
    from click.types import StringParamType

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
  hbwrap run --name post-3am --timeout 15m --response-timeout 2m -- ./post.sh
  hbwrap run --progress-timeout 20m --restart on-failure -- ./research.py
  hbwrap run --quiet --response-timeout 5m -- ./nightly.sh   # cron: quiet

\b
DUR: 90, 1.5, 250ms, 90s, 15m, 2h, 1d, 1h30m (0 turns a timeout off).
SIZE: 4096, 10MB, 1GB, 500KiB.
Exit: the command's own code; 124 stall, --timeout or --deadline; 125 hbwrap
failed; 126/127 not executable/not found; 128+S killed by signal S, or hbwrap
got SIGTERM/SIGINT/SIGHUP (143: hbwrap stop); 2 usage; 75 --if-running fail.
"""

# The panels of `hbwrap run --help`, in the order a person looks for things. Every run option belongs to
# one (tests/test_docs.py checks it).
DEADLINES = "Deadlines and signs of life"
STOPPING = "Stopping"
RESTARTS = "Restarts"
ALERTS = "Alerts and pings"
TAKEOVER = "Takeover and leases"
FILES = "Output and files"


class _Plain(StringParamType):
    """A string argument whose help row shows its metavar alone (typer would add `<str>`)."""

    def get_metavar(self, param, ctx=None) -> str:
        return ""


PLAIN = _Plain()


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


def _opt(panel: str, flag: str, metavar: str, help: str, default: str | None = None):
    """A run option that takes a value. Its real default lives in options.py (and may come from the config
    file), so typer's is None; `default` is only what the help shows."""
    if default is not None:  # escaped: rich would take a bare `[default: ...]` for markup and drop it
        help = f"{help} \\[default: {default}]"
    return typer.Option(None, flag, metavar=metavar, rich_help_panel=panel, help=help, show_default=False)


STATE_DIR_HELP = "Where job state lives (created with mode 0700)."
STATE_DIR_DEFAULT = "$HBWRAP_STATE_DIR, else $XDG_STATE_HOME/hbwrap, else ~/.local/state/hbwrap"
CONFIG_OPTION = _opt(FILES, "--config", "FILE", "TOML defaults and jobs.",
                     "$HBWRAP_CONFIG, else $XDG_CONFIG_HOME/hbwrap/config.toml if it exists")


@app.command(context_settings={"allow_interspersed_args": False}, help=RUN_HELP, no_args_is_help=False,
             rich_help_panel="Supervise")
def run(
    ctx: typer.Context,
    command: Optional[List[str]] = typer.Argument(None, metavar="-- COMMAND [ARG...]", show_default=False,
                                                  click_type=PLAIN, help="The command to supervise and its arguments."),
    # deadlines and signs of life
    timeout: Optional[str] = _opt(DEADLINES, "--timeout", "DUR", "Wall-clock limit of one attempt."),
    deadline: Optional[str] = _opt(DEADLINES, "--deadline", "DUR", "Wall-clock limit of the whole run, all attempts and back-off waits included; then the child group is stopped and the run escalates."),
    response_timeout: Optional[str] = _opt(DEADLINES, "--response-timeout", "DUR", "Longest time without a sign of life: output, a heartbeat-file touch, a progress marker. A passing probe is not one."),
    progress_timeout: Optional[str] = _opt(DEADLINES, "--progress-timeout", "DUR", "Longest time without progress: a progress-marker line, or a change of the checkpoint file's content."),
    start_grace: Optional[str] = _opt(DEADLINES, "--start-grace", "DUR", "Start the response and progress clocks of each attempt this long after it starts.", default="0"),
    progress_pattern: Optional[List[str]] = _opt(DEADLINES, "--progress-pattern", "REGEX", "Output lines matching it are progress markers (repeatable; Python re, per line; \\r ends a line too); group 1 or (?P<checkpoint>...) is the checkpoint, else the whole match.", default="^\\s*checkpoint[:=]\\s*(\\S.*?)\\s*$"),
    checkpoint_file: Optional[str] = _opt(DEADLINES, "--checkpoint-file", "PATH", "A change of its content is progress; its last non-empty line is the checkpoint.", default="<job dir>/checkpoint"),
    heartbeat_file: Optional[str] = _opt(DEADLINES, "--heartbeat-file", "PATH", "A change of its modification time is a sign of life.", default="<job dir>/heartbeat"),
    probe: Optional[str] = _opt(DEADLINES, "--probe", "CMD", "Liveness probe run with sh -c every --probe-interval; a non-zero exit or a run past --probe-timeout is a failure; --probe-failures in a row are a stall."),
    probe_interval: Optional[str] = _opt(DEADLINES, "--probe-interval", "DUR", "Time between probes.", default="30s"),
    probe_timeout: Optional[str] = _opt(DEADLINES, "--probe-timeout", "DUR", "A probe running longer is killed and counts as a failure.", default="10s"),
    probe_failures: Optional[str] = _opt(DEADLINES, "--probe-failures", "N", "Consecutive probe failures that make a stall.", default="3"),
    activity: Optional[str] = _opt(DEADLINES, "--activity", "LIST", "Also count the command's process-tree activity as a sign of life: cpu (its CPU time grew by at least 1% of one core), io (its read/write counters grew), or cpu,io. For silent but busy work: rsync, pg_dump, a compiler."),
    repeat_timeout: Optional[str] = _opt(DEADLINES, "--repeat-timeout", "DUR", "Longest time in which the output holds no new line (every line equals one of the last 1,000 once digits and hex runs are masked): an agent looping on the same retry. Stall reason repeat."),
    # stopping
    kill_signal: Optional[str] = _opt(STOPPING, "--kill-signal", "SIG", "First signal sent to the child group when stopping it (TERM, SIGINT, 9).", default="TERM"),
    grace: Optional[str] = _opt(STOPPING, "--grace", "DUR", "After the first signal, wait this long, then SIGKILL the group and every descendant that escaped it.", default="10s"),
    dump_signal: Optional[str] = _opt(STOPPING, "--dump-signal", "SIG", "Before stopping a stalled attempt, send this signal to the command (USR1 for Python's faulthandler.register, QUIT for Java and Go) and wait --dump-wait, so its stack dump lands in the log and the incident."),
    dump_wait: Optional[str] = _opt(STOPPING, "--dump-wait", "DUR", "How long to wait for the stack dump before the kill signal.", default="2s"),
    # restarts
    restart: Optional[str] = _opt(RESTARTS, "--restart", "MODE", "When to start another attempt: never, on-stall (after stalls), on-failure (also after non-zero exits and deaths by signal).", default="on-stall"),
    max_restarts: Optional[str] = _opt(RESTARTS, "--max-restarts", "N", "Restarts allowed in one run; the next failure escalates.", default="3"),
    backoff: Optional[str] = _opt(RESTARTS, "--backoff", "DUR", "Wait before restart k: backoff × 2^(k-1), capped by --backoff-max, jittered to 50-100% of that.", default="1s"),
    backoff_max: Optional[str] = _opt(RESTARTS, "--backoff-max", "DUR", "Cap of the back-off wait.", default="5m"),
    retry_exit_codes: Optional[str] = _opt(RESTARTS, "--retry-exit-codes", "LIST", "With on-failure, retry only these exit codes (1,2,75).", default="any non-zero"),
    fatal_pattern: Optional[List[str]] = _opt(RESTARTS, "--fatal-pattern", "REGEX", "An output line matching it makes this attempt's failure non-retryable, e.g. 'account suspended' (repeatable)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", rich_help_panel=RESTARTS, show_default=True, help="Give the next attempt the last checkpoint in HBWRAP_RESUME_FROM."),
    retry_after_pattern: Optional[List[str]] = _opt(RESTARTS, "--retry-after-pattern", "REGEX", "An output line matching it sets the delay before the next restart to the duration in group 1 (a rate limit) instead of the back-off; a delay past --deadline escalates at once (repeatable).", default="^\\s*retry[-_ ]after[:=]\\s*(\\S+)\\s*$"),
    restart_check: Optional[str] = _opt(RESTARTS, "--restart-check", "CMD", "Before each restart, run CMD with sh -c (the alert environment plus HBWRAP_RESUME_FROM); restart only if it exits 0, else escalate (reason unsafe). For jobs with side effects: was the post already made?"),
    restart_approval: Optional[str] = _opt(RESTARTS, "--restart-approval", "DUR", "Alert first: when a restart is due, alert restart_pending and wait up to DUR for hbwrap approve NAME (restart now) or hbwrap deny NAME (escalate); the wait counts against --deadline."),
    approval_default: Optional[str] = _opt(RESTARTS, "--approval-default", "MODE", "What happens when --restart-approval passes with no answer: restart, or abort (escalate, reason no approval).", default="abort"),
    # alerts and pings
    alert_cmd: Optional[str] = _opt(ALERTS, "--alert-cmd", "CMD", "Run with sh -c for each alerted event; details arrive in HBWRAP_EVENT, HBWRAP_REASON, HBWRAP_EVENT_JSON, ... (never spliced into CMD)."),
    alert_webhook: Optional[List[str]] = _opt(ALERTS, "--alert-webhook", "URL", "HTTP POST for each alerted event, body per --webhook-format (repeatable; or $HBWRAP_ALERT_WEBHOOK, space-separated)."),
    webhook_format: Optional[str] = _opt(ALERTS, "--webhook-format", "FORMAT", "json (the event object), slack ({\"text\": ...}) or discord ({\"content\": ...}).", default="json"),
    alert_on: Optional[str] = _opt(ALERTS, "--alert-on", "LIST", "Events that alert: all, or a comma list of event names.", default="stall,escalate,takeover,restart_pending"),
    ping_url: Optional[str] = _opt(ALERTS, "--ping-url", "URL", "healthchecks.io-compatible pings: URL/start when the run starts, URL/<exit code> when it ends (URL/fail where none exists), URL/log for stalls, takeovers and stops (or $HBWRAP_PING_URL)."),
    # takeover and leases
    if_running: Optional[str] = _opt(TAKEOVER, "--if-running", "MODE", "When a live supervisor already runs this job: skip (exit 0 at once), fail (exit 75) or wait (for it to finish, then run).", default="skip"),
    lease: Optional[str] = _opt(TAKEOVER, "--lease", "DUR", "Renew the supervisor's lease at least every lease/3; one whose lease is older is hung: the next run or watch of the job kills it and takes over.", default="30s"),
    lease_url: Optional[str] = _opt(TAKEOVER, "--lease-url", "URL", "Hold the job's lease in PostgreSQL (postgresql://...) instead of the state dir, so the same job line on several hosts runs on exactly one of them.", default="$HBWRAP_LEASE_URL"),
    host: Optional[str] = _opt(TAKEOVER, "--host", "NAME", "This host's name in a shared lease and in status --fleet.", default="the host name"),
    self_heal: bool = typer.Option(True, "--self-heal/--no-self-heal", rich_help_panel=TAKEOVER, show_default=True, help="When the supervisor dies or hangs, its keeper starts a replacement (hbwrap watch NAME) by itself: within 2 s of a death, --lease + 2 s of a hang; at most 3 per run."),
    # output and files
    name: Optional[str] = _opt(FILES, "--name", "NAME", "Job name, [A-Za-z0-9._-]{1,64}; the default is the same for the same command line, so a crontab line is always one job.", default="derived from the command line"),
    state_dir: Optional[str] = _opt(FILES, "--state-dir", "DIR", STATE_DIR_HELP, STATE_DIR_DEFAULT),
    config: Optional[str] = CONFIG_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", rich_help_panel=FILES, help="Cron mode: no output unless the run fails, then all of it (capped) and the log's path."),
    verbose: bool = typer.Option(False, "--verbose", "-v", rich_help_panel=FILES, help="Say more on stderr (e.g. when an overlapping run is skipped)."),
    pty: bool = typer.Option(False, "--pty", rich_help_panel=FILES, help="Run the command on a pseudo-terminal, so programs that buffer when not on a terminal stream their output."),
    log_max_size: Optional[str] = _opt(FILES, "--log-max-size", "SIZE", "Rotate the job's output log beyond this size; one rotated file is kept.", default="50MB"),
) -> int:
    from hbwrap.entry import run_command

    return run_command(_given(ctx, command), name, config)


def _state_dir(state_dir: Optional[str]):
    from hbwrap.jobstore import StateDir
    from hbwrap.options import default_state_dir

    return StateDir(state_dir) if state_dir else StateDir(default_state_dir())


STATE_DIR_OPTION = typer.Option(None, "--state-dir", metavar="DIR", help=f"Where job state lives. \\[default: {STATE_DIR_DEFAULT}]")
JOB_ARGUMENT = typer.Argument(..., metavar="NAME", click_type=PLAIN, help="The job.")


@app.command(rich_help_panel="Inspect")
def status(
    name: Optional[str] = typer.Argument(None, metavar="NAME", click_type=PLAIN, help="Only this job."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects (ISO 8601 UTC times)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh the table every second until Ctrl-C (terminal only)."),
    state_dir: Optional[str] = STATE_DIR_OPTION,
    fleet: bool = typer.Option(False, "--fleet", help="Every job in the shared lease store instead: holder host, generation, status, lease, checkpoint, last progress."),
    lease_url: Optional[str] = typer.Option(None, "--lease-url", metavar="URL", help="The shared lease store for --fleet, postgresql://... (default $HBWRAP_LEASE_URL)."),
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


@app.command(rich_help_panel="Inspect")
def events(
    name: str = JOB_ARGUMENT,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, as stored."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until the job's run ends."),
    lines: Optional[int] = typer.Option(None, "-n", "--lines", min=0, metavar="N", help="Only the last N events."),
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


@app.command(rich_help_panel="Inspect")
def logs(
    name: str = JOB_ARGUMENT,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the job's run ends."),
    lines: Optional[int] = typer.Option(None, "-n", "--lines", min=0, metavar="N", help="Only the last N lines."),
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


@app.command(rich_help_panel="Inspect")
def incident(
    name: str = JOB_ARGUMENT,
    as_json: bool = typer.Option(False, "--json", help="The whole incident as JSON."),
    run_id: Optional[str] = typer.Option(None, "--run", metavar="RUN_ID", help="Of this run (default: the latest)."),
    attempt: Optional[int] = typer.Option(None, "--attempt", metavar="N", min=1, help="Of this attempt."),
    state_dir: Optional[str] = STATE_DIR_OPTION,
) -> int:
    """What hbwrap saw when it decided to stop an attempt: the deadline that fired and its figures, the
    process tree (state, wait channel, CPU, sockets), the last output lines, the checkpoint, a stack dump.

    The job keeps its last 20. Exit 1 when there is none.

    \b
    Examples:
      hbwrap incident reddit-3am
      hbwrap incident research --attempt 2 --json | jq '.tree.processes[].wchan'
    """
    from hbwrap import views

    return views.print_incident(_state_dir(state_dir).existing_job(name), as_json, run_id, attempt)


@app.command(rich_help_panel="Supervise")
def watch(
    name: str = JOB_ARGUMENT,
    state_dir: Optional[str] = STATE_DIR_OPTION,
    by: str = typer.Option("watch", "--by", hidden=True, help="Who takes over (the keeper says 'keeper')."),
) -> int:
    """Take over supervision of a job whose supervisor died or hung (no command line needed).

    Exits as `run` would; 75 when a live supervisor holds the job; 1 when there is nothing to take over.

    \b
    Examples:
      hbwrap watch reddit-3am
      */5 * * * * hbwrap watch reddit-3am   # crontab: re-attach within 5 min
    """
    from hbwrap.takeover import watch_job

    if by not in ("watch", "keeper"):
        raise UsageError("--by: must be watch or keeper")
    return watch_job(_state_dir(state_dir), name, by)


@app.command(rich_help_panel="Supervise")
def stop(
    name: str = JOB_ARGUMENT,
    timeout: Optional[str] = typer.Option(None, "--timeout", metavar="DUR", help="How long to wait for the job to stop. \\[default: its --grace + 15s]"),
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
    from hbwrap.takeover import stop_job

    timeout_s = parse_duration(timeout, "--timeout") if timeout is not None else None
    return stop_job(_state_dir(state_dir), name, timeout_s)


@app.command(rich_help_panel="Supervise")
def approve(
    name: str = JOB_ARGUMENT,
    state_dir: Optional[str] = STATE_DIR_OPTION,
) -> int:
    """Approve the pending restart of a job run with --restart-approval: it restarts now (after its --restart-check).

    Works from any shell of the same user, whichever supervisor holds the job (also after a takeover).
    Exit 0 with one line once the answer is recorded; 1 for an unknown job or when no restart is pending.

    \b
    Examples:
      hbwrap approve reddit-3am
      ssh web-1 hbwrap approve reddit-3am   # on the host the alert names
    """
    from hbwrap.approval import answer_job

    return answer_job(_state_dir(state_dir), name, "approve")


@app.command(rich_help_panel="Supervise")
def deny(
    name: str = JOB_ARGUMENT,
    state_dir: Optional[str] = STATE_DIR_OPTION,
) -> int:
    """Deny the pending restart of a job run with --restart-approval: the run gives up (escalate, reason denied).

    Works from any shell of the same user, whichever supervisor holds the job (also after a takeover).
    Exit 0 with one line once the answer is recorded; 1 for an unknown job or when no restart is pending.

    \b
    Examples:
      hbwrap deny reddit-3am
      ssh web-1 hbwrap deny reddit-3am      # the post went out after all
    """
    from hbwrap.approval import answer_job

    return answer_job(_state_dir(state_dir), name, "deny")


config_app = typer.Typer(help="Show the effective settings of a job, or write a starter config file.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config", rich_help_panel="Settings")


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
    from hbwrap.config_write import to_toml
    from hbwrap.config_merge import run_settings

    run_command = typer.main.get_command(app).commands["run"]  # parse the arguments exactly as `run` would
    run_ctx = run_command.make_context("run", list(ctx.args), parent=ctx.parent)
    params = run_ctx.params
    opts, settings, origins, _config = run_settings(
        _given(run_ctx, params.get("command")), params.get("name"), params.get("config"), need_command=False)
    settings["state-dir"] = opts.state_dir
    from hbwrap.alerts.mask import mask_url

    settings["alert-webhook"] = [mask_url(u) for u in settings.get("alert-webhook") or []]
    if settings.get("ping-url"):
        settings["ping-url"] = mask_url(settings["ping-url"])
    if settings.get("lease-url"):
        from hbwrap.lease_url import mask_lease_url

        settings["lease-url"] = mask_lease_url(settings["lease-url"])
    job = opts.name if params.get("name") or params.get("command") else None
    sys.stdout.write(to_toml(settings, origins if origin else None, job=job))
    return 0


@config_app.command("init")
def config_init(
    path: Optional[str] = typer.Argument(None, metavar="PATH", click_type=PLAIN, help="Where to write it. \\[default: $HBWRAP_CONFIG, else $XDG_CONFIG_HOME/hbwrap/config.toml]"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> int:
    """Write a starter config file with documented example jobs (never overwrites without --force).

    \b
    Examples:
      hbwrap config init
      hbwrap config init ./hbwrap.toml --force
    """
    from hbwrap.config_merge import default_config_path
    from hbwrap.config_write import write_starter

    target = path or default_config_path()
    write_starter(target, force)
    sys.stderr.write(f"hbwrap: wrote {target}\n")
    return 0


@app.command(rich_help_panel="Inspect")
def metrics(
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE", help="Write to FILE atomically (for node_exporter's textfile collector) instead of stdout."),
    state_dir: Optional[str] = STATE_DIR_OPTION,
) -> int:
    """All jobs in the Prometheus text format (metric names hbwrap_*, label job_name).

    \b
    Examples:
      hbwrap metrics
      hbwrap metrics --output /var/lib/node_exporter/textfile/hbwrap.prom
    """
    from hbwrap import views
    from hbwrap.metrics import metrics_text, write_atomic

    text = metrics_text(views.metrics_rows(_state_dir(state_dir)))
    if output:
        write_atomic(output, text)
    else:
        sys.stdout.write(text)
    return 0


@app.command(rich_help_panel="Inside a supervised command")
def checkpoint(value: str = typer.Argument(..., metavar="VALUE", click_type=PLAIN, help="The checkpoint value, e.g. page-42.")) -> int:
    """Record progress from inside a supervised command (writes $HBWRAP_CHECKPOINT_FILE).

    \b
    Example (in a script run by hbwrap):
      hbwrap checkpoint "page-$page"
    """
    from hbwrap.jobfiles import write_checkpoint

    write_checkpoint(value)
    return 0


@app.command(rich_help_panel="Inside a supervised command")
def beat() -> int:
    """Give a sign of life from inside a supervised command (touches $HBWRAP_HEARTBEAT_FILE).

    \b
    Example (in a script run by hbwrap):
      while work; do hbwrap beat; done
    """
    from hbwrap.jobfiles import touch_heartbeat

    touch_heartbeat()
    return 0


def _err(text: str) -> None:
    sys.stderr.write(f"hbwrap: {text}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """The typer CLI (entry.py sends here whatever it does not run itself); exits with the command's code."""
    from hbwrap.entry import finish

    finish(lambda: _invoke(argv))


def _invoke(argv: list[str] | None) -> int:
    """Typer's own outcomes as exit codes; HbwrapError, Ctrl-C and a closed stdout are left to finish()."""
    try:  # typer >= 0.29 vendors click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as cx

    command = typer.main.get_command(app)
    try:
        return command.main(args=argv, prog_name="hbwrap", standalone_mode=False)
    except cx.UsageError as exc:
        message = exc.format_message().replace("\n", " ").strip()
        if message:  # empty: `hbwrap` alone, and the help has been printed already
            _err(f"error: {message}")
        return ExitCode.USAGE
    except typer.Abort:
        _err("interrupted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except cx.ClickException as exc:
        _err(f"error: {exc.format_message()}")
        return exc.exit_code
