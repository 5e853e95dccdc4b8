"""Delivery of alerts off the main thread: the `Alerter` (one worker thread per target), HTTP POSTs, the alert command.

Every delivery runs on a background thread, one thread per target (each webhook URL, the ping URL, the
alert command), so one slow target never holds up another and each target sees its events in order
(a ping's /start always precedes its success). `notify` only decides and enqueues; `close` waits a
bounded time and records whatever is still in flight as `alert_failed`.

HTTP uses the standard library (urllib.request) rather than requests/httpx: a POST of a small body
needs nothing more, hbwrap starts on every cron tick (requests alone costs ~100 ms of imports), and
there is no dependency to pin or audit. urllib (and with it ssl) is imported only by the worker
thread, the first time a webhook or ping is actually sent. It honours https_proxy/no_proxy.

Secrets: every URL that leaves this module (targets, reasons, exception texts, response snippets,
alert-command output) goes through `mask_url` / `mask_text` first.
"""
from __future__ import annotations

import collections
import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from hbwrap import __version__
from hbwrap.alerts.mask import mask_text, mask_url, mask_urls_in, url_problem
from hbwrap.alerts.messages import (DEFAULT_ALERT_ON, PING_ACTIONS, PING_BODY_BYTES, TAIL_EVENTS, WEBHOOK_FORMATS,
                                    clean_text, fmt_duration, hhmm, one_line, ping_endpoint, summarize,
                                    tail_bytes_cut, trimmed_event, webhook_body)

CHANNEL_WEBHOOK, CHANNEL_PING, CHANNEL_CMD = "webhook", "ping", "alert-cmd"
ENV_VALUE_MAX_CHARS = 64 * 1024    # below the kernel's 128 KiB limit for one environment string
CMD_OUTPUT_BYTES = 4096            # the alert command's output kept (alert_failed, or alert_output on success)
CMD_TERM_GRACE_S = 1.0             # timed-out alert command: SIGTERM to its group, then SIGKILL this much later
CMD_PIPE_LINGER_S = 0.5            # after the shell exits, read what its background children still write this long
RETRY_AFTER_MAX_S = 5.0
RESPONSE_SNIPPET_BYTES = 300


# --- delivery machinery -------------------------------------------------------------------------

class _Failed(Exception):
    """A delivery that did not succeed: `reason` plus fields for the alert_failed record."""

    def __init__(self, reason: str, **fields):
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


class _Delivery:
    __slots__ = ("channel", "target", "alert_event", "send")

    def __init__(self, channel: str, target: str, alert_event: str, send: Callable[[], None]):
        self.channel, self.target, self.alert_event, self.send = channel, target, alert_event, send


class _Lane:
    """One target's queue and worker thread: deliveries to it happen one at a time, in order."""

    def __init__(self, name: str):
        self.name = name
        self.queue: collections.deque[_Delivery] = collections.deque()
        self.current: _Delivery | None = None
        self.thread: threading.Thread | None = None
        self.proc: subprocess.Popen | None = None  # the alert command now running, if any

    def busy(self) -> bool:
        return bool(self.queue) or self.current is not None


_opener_lock = threading.Lock()
_opener = None


def _http_opener():
    """urllib opener (built on first use: urllib and ssl are imported here, never at start-up)."""
    global _opener
    with _opener_lock:
        if _opener is None:
            import urllib.request

            class KeepPostOnRedirect(urllib.request.HTTPRedirectHandler):
                # urllib refuses to re-send a POST on 307/308; those codes mean "same request, over there"
                def redirect_request(self, req, fp, code, msg, headers, newurl):
                    if code in (307, 308) and req.get_method() == "POST":
                        new = urllib.request.Request(newurl, data=req.data, headers=dict(req.header_items()),
                                                     method="POST", origin_req_host=req.origin_req_host,
                                                     unverifiable=True)
                    else:
                        new = super().redirect_request(req, fp, code, msg, headers, newurl)
                    if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
                        new.remove_header("Authorization")  # credentials stay with the host they were for
                    return new

            _opener = urllib.request.build_opener(KeepPostOnRedirect)
        return _opener


class Alerter:
    """Sends alerts (command, webhooks) and healthchecks.io pings for a job's events, never blocking the caller.

    `notify(event)` is called for every event the supervisor emits; `close()` before exiting. Failures of
    any kind become one `record({...})` call each (an `alert_failed` event), with URLs masked.
    """

    def __init__(self, *, job: str, alert_cmd: str | None, webhooks: list[str], webhook_format: str,
                 alert_on: frozenset[str] | None, ping_url: str | None, record: Callable[[dict], None],
                 output_tail: Callable[[int], bytes], env: dict[str, str] | None = None, timeout_s: float = 5.0,
                 retries: int = 2, cmd_timeout_s: float = 30.0, backoff_s: float = 0.5,
                 delivered: Callable[[dict], None] | None = None):
        if webhook_format not in WEBHOOK_FORMATS:
            raise ValueError(f"webhook format must be one of {', '.join(WEBHOOK_FORMATS)}, not {webhook_format!r}")
        self.job = job
        self.alert_cmd = alert_cmd or None
        self.webhooks = list(dict.fromkeys(u for u in webhooks if u))  # same URL twice: one lane, one POST
        self.webhook_format = webhook_format
        self.alert_on = frozenset(DEFAULT_ALERT_ON if alert_on is None else alert_on)
        self.ping_url = ping_url or None
        self._record = record
        self._output_tail = output_tail
        self._delivered = delivered
        self._ping_body_limit: int | None = None  # learnt from the server's Ping-Body-Limit header
        self.env = env
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.cmd_timeout_s = float(cmd_timeout_s)
        self.backoff_s = max(0.0, float(backoff_s))
        self._secrets = [u for u in [*self.webhooks, self.ping_url] if u]
        self._cond = threading.Condition(threading.RLock())
        self._stop = threading.Event()   # set when close() gives up: back-offs end, alert commands die
        self._lanes: dict[str, _Lane] = {}
        self._closing = self._closed = self._abandoned = False
        # the "recovered" notion: stalls seen in this run, and the attempt that came after the last one
        self._run_id: str | None = None
        self._stalls: list[dict] = []
        self._after_stall: dict | None = None

    # --- public --------------------------------------------------------------------------------
    @property
    def own_pids(self) -> set[int]:
        """Alert commands running now (a PID-1 supervisor must leave them to their Popen to reap)."""
        with self._cond:
            return {lane.proc.pid for lane in self._lanes.values() if lane.proc is not None}

    def replay(self, events: list[dict]) -> None:
        """Learn the run's history without alerting (after a takeover: earlier stalls make a success 'recovered')."""
        with self._cond:
            for event in events:
                try:
                    self._track(event)
                except Exception:
                    pass

    def notify(self, event: dict) -> None:
        """Decide what `event` triggers and hand it to the background workers; returns at once, never raises."""
        try:
            self._notify(event)
        except Exception as exc:  # a bug here must never take supervision down
            name = event.get("event") if isinstance(event, dict) else None
            self._safe_record({"reason": f"internal error preparing alert: {type(exc).__name__}: "
                                         f"{mask_text(str(exc), self._secrets)}",
                               "channel": "alerts", "target": "", "alert_event": str(name)})

    def close(self, wait_s: float = 10.0) -> None:
        """Wait up to `wait_s` for queued and in-flight deliveries; record the rest as alert_failed. Never raises."""
        try:
            self._close(wait_s)
        except Exception:
            pass

    # --- deciding ------------------------------------------------------------------------------
    def _track(self, event: dict) -> dict | None:
        """Update the run's stall history; for a success after a stall, the recovery facts."""
        name, run_id = event.get("event"), event.get("run_id")
        if name == "run_start" or run_id != self._run_id:
            self._run_id, self._stalls, self._after_stall = run_id, [], None
        if name == "stall":
            self._stalls.append({"ts": event.get("ts"), "reason": event.get("reason"),
                                 "checkpoint": event.get("checkpoint")})
            self._after_stall = None
        elif name == "attempt_start" and self._stalls and self._after_stall is None:
            self._after_stall = {"ts": event.get("ts"), "resume_from": event.get("resume_from"),
                                 "attempt": event.get("attempt")}
        elif name == "success" and self._stalls:
            first = self._stalls[0]
            recovered_ts = (self._after_stall or {}).get("ts") or event.get("ts")
            return {"stalls": len(self._stalls), "stalled_at": first["ts"], "stall_reason": first["reason"],
                    "stalled_at_hhmm": hhmm(first["ts"]), "recovered_at": recovered_ts,
                    "recovered_at_hhmm": hhmm(recovered_ts),
                    "resumed_from": (self._after_stall or {}).get("resume_from")}
        return None

    def _notify(self, event: dict) -> None:
        name = event.get("event")
        if name in ("alert_failed", "alert_output") or not isinstance(name, str):
            return
        with self._cond:
            if self._closing:
                return
            recovery = self._track(event)
        alert = name in self.alert_on or (recovery is not None and "stall" in self.alert_on)
        ping_action = PING_ACTIONS.get(name) if self.ping_url else None
        alerting = alert and (self.alert_cmd or self.webhooks)
        if not alerting and ping_action is None:
            return
        # The tail is read now, not when a worker gets to it: by then a restart may have written more.
        tail = None
        if ping_action not in (None, "start") or (alerting and name in TAIL_EVENTS):
            try:
                tail = tail_bytes_cut(bytes(self._output_tail(PING_BODY_BYTES + 1) or b""), PING_BODY_BYTES)
            except Exception:
                tail = b""
        sent = trimmed_event(event)
        extra = {}
        if recovery:
            extra = {"recovered": True, "stalls": recovery["stalls"], "stalled_at": recovery["stalled_at"],
                     "stall_reason": recovery["stall_reason"], "recovered_at": recovery["recovered_at"],
                     "resumed_from": recovery["resumed_from"]}
            extra = {k: v for k, v in trimmed_event(extra).items() if v is not None}
        summary = summarize(sent, recovery)
        if alerting:
            chat_tail = tail if name in TAIL_EVENTS else None
            for url in self.webhooks:
                body = webhook_body(self.webhook_format, sent, summary, chat_tail, extra)
                data = json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")
                self._enqueue(f"webhook {url}", _Delivery(
                    CHANNEL_WEBHOOK, mask_url(url), name,
                    lambda url=url, data=data: self._post(url, data, "application/json")))
            if self.alert_cmd:
                cmd_event = {**sent, **extra, "summary": summary}
                self._enqueue("alert-cmd", _Delivery(
                    CHANNEL_CMD, one_line(mask_urls_in(mask_text(self.alert_cmd, self._secrets)), 200), name,
                    lambda cmd_event=cmd_event: self._run_cmd(cmd_event)))
        if ping_action is not None:
            url = ping_endpoint(self.ping_url, ping_action, event.get("run_id"))
            data = tail if ping_action != "start" else b""
            self._enqueue("ping", _Delivery(CHANNEL_PING, mask_url(url), name,
                                            lambda url=url, data=data: self._ping(url, data or b"")))

    def _enqueue(self, lane_name: str, delivery: _Delivery) -> None:
        with self._cond:
            if self._closing:
                return
            lane = self._lanes.get(lane_name)
            if lane is None:
                lane = self._lanes[lane_name] = _Lane(lane_name)
            lane.queue.append(delivery)
            if lane.thread is None:
                lane.thread = threading.Thread(target=self._work, args=(lane,), name=f"hbwrap-alert-{delivery.channel}",
                                               daemon=True)
                lane.thread.start()
            self._cond.notify_all()

    # --- working -------------------------------------------------------------------------------
    def _work(self, lane: _Lane) -> None:
        while True:
            with self._cond:
                while not lane.queue and not self._closing:
                    self._cond.wait()
                if self._abandoned or not lane.queue:
                    lane.current = None
                    self._cond.notify_all()
                    return
                delivery = lane.current = lane.queue.popleft()
            failure = info = None
            try:
                info = delivery.send()
            except _Failed as exc:
                failure = exc
            except Exception as exc:  # a bug must not kill the lane
                failure = _Failed(f"internal error: {type(exc).__name__}: {exc}")
            with self._cond:
                # Recorded under the lock: close() either sees this delivery still in flight (and
                # records it as a timeout) or sees it finished, never both and never neither.
                if not self._abandoned:
                    if failure is not None:
                        self._safe_record({"reason": mask_text(failure.reason, self._secrets),
                                           "channel": delivery.channel, "target": delivery.target,
                                           "alert_event": delivery.alert_event, **failure.fields})
                    elif self._delivered is not None:
                        try:
                            self._delivered({"channel": delivery.channel, "target": delivery.target,
                                             "alert_event": delivery.alert_event, **(info or {})})
                        except Exception:
                            pass
                lane.current = None
                self._cond.notify_all()

    def _safe_record(self, fields: dict) -> None:
        try:
            self._record({k: v for k, v in fields.items() if v is not None})
        except Exception:
            pass

    def _close(self, wait_s: float) -> None:
        deadline = time.monotonic() + max(0.0, wait_s)
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
            while any(lane.busy() for lane in self._lanes.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._closed = True
            left = []
            for lane in self._lanes.values():
                if lane.current is not None:
                    left.append(lane.current)
                left.extend(lane.queue)
                lane.queue.clear()
            if not left:
                return
            self._abandoned = True
            self._stop.set()
            for lane in self._lanes.values():
                if lane.proc is not None:  # not reaped: workers reap only while holding this lock
                    _kill_group(lane.proc, signal.SIGKILL)
        for delivery in left:
            self._safe_record({"reason": f"timeout at exit (still in flight after {fmt_duration(wait_s)})",
                               "channel": delivery.channel, "target": delivery.target,
                               "alert_event": delivery.alert_event})

    # --- HTTP ----------------------------------------------------------------------------------
    def _ping(self, url: str, data: bytes) -> dict:
        """One healthchecks ping. The server keeps only the first Ping-Body-Limit bytes of a body (it says so
        in every reply): send the last that many, so the newest output (usually the error) survives."""
        if self._ping_body_limit is not None:
            data = tail_bytes_cut(data, self._ping_body_limit)
        info = self._post(url, data, "text/plain; charset=utf-8")
        limit = info.pop("body_limit", None)
        try:
            if limit is not None and int(limit) > 0:
                self._ping_body_limit = int(limit)
        except ValueError:
            pass
        return info

    def _post(self, url: str, data: bytes, content_type: str) -> dict:
        """POST with retries (5xx, 408, 429, connection errors and timeouts); _Failed when it gives up."""
        problem = url_problem(url)
        if problem:
            raise _Failed(problem, tries=0)
        tries = 0
        while True:
            tries += 1
            delay = self.backoff_s * 2 ** (tries - 1)
            try:
                status, retry_after, snippet, body_limit = self._post_once(url, data, content_type)
            except Exception as exc:
                reason, retryable = self._describe(exc, url)
                status = None
            else:
                if 200 <= status < 300:
                    info = {"tries": tries, "http_status": status}
                    if body_limit is not None:
                        info["body_limit"] = body_limit
                    return info
                reason = f"HTTP {status}"
                text = one_line(snippet.decode("utf-8", "replace"), RESPONSE_SNIPPET_BYTES) if snippet else ""
                if text:
                    reason += f": {text}"
                retryable = status >= 500 or status in (408, 429)
                try:
                    if retry_after is not None:
                        delay = min(max(delay, float(retry_after)), RETRY_AFTER_MAX_S)
                except ValueError:
                    pass
            if not retryable or tries > self.retries:
                raise _Failed(mask_text(reason, self._secrets), tries=tries, http_status=status)
            if self._stop.wait(delay):
                raise _Failed("timeout at exit", tries=tries, http_status=status)

    def _post_once(self, url: str, data: bytes, content_type: str) -> tuple[int, str | None, bytes, str | None]:
        """(status, Retry-After, start of an error reply, Ping-Body-Limit of a good reply)."""
        import urllib.error
        import urllib.request

        headers = {"Content-Type": content_type, "User-Agent": f"hbwrap/{__version__}"}
        parts = urlsplit(url)
        if "@" in parts.netloc:
            # urllib does not turn user-info into credentials: send it as HTTP Basic auth ourselves
            import base64
            from urllib.parse import unquote

            userinfo, _, hostport = parts.netloc.rpartition("@")
            user, _, password = userinfo.partition(":")
            token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
            url = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
        request = urllib.request.Request(url, data=data, method="POST", headers=headers)
        try:
            with _http_opener().open(request, timeout=self.timeout_s) as resp:
                resp.read(65536)
                return resp.status, None, b"", resp.headers.get("Ping-Body-Limit")
        except urllib.error.HTTPError as exc:
            try:
                snippet = exc.read(RESPONSE_SNIPPET_BYTES) or b""
            except Exception:
                snippet = b""
            finally:
                exc.close()
            return exc.code, exc.headers.get("Retry-After") if exc.headers else None, snippet, None

    def _describe(self, exc: BaseException, url: str) -> tuple[str, bool]:
        """(reason, retryable) for an exception from a POST; the reason never holds the URL in full."""
        import http.client
        import socket
        import sys
        import urllib.error

        inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        host = urlsplit(url).hostname or "?"
        ssl = sys.modules.get("ssl")
        if isinstance(inner, (TimeoutError, socket.timeout)):
            return f"timed out after {fmt_duration(self.timeout_s)}", True
        if isinstance(inner, ConnectionRefusedError):
            return f"connection refused by {host}", True
        if isinstance(inner, socket.gaierror):
            return f"cannot resolve host {host}: {inner.strerror or inner}", True
        if ssl is not None and isinstance(inner, ssl.SSLCertVerificationError):
            return f"TLS certificate of {host} rejected: {inner.verify_message or inner}", False
        if isinstance(inner, ConnectionError):
            return f"connection to {host} failed: {inner.strerror or type(inner).__name__}", True
        if isinstance(inner, http.client.InvalidURL):
            return f"invalid URL: {inner}", False
        if isinstance(inner, http.client.HTTPException):
            return f"bad HTTP response from {host}: {type(inner).__name__} {inner}".rstrip(), True
        if isinstance(inner, OSError):
            return f"network error talking to {host}: {inner.strerror or inner}", True
        if isinstance(inner, str):
            return inner, False
        if isinstance(exc, ValueError):
            return f"invalid URL: {exc}", False
        return f"{type(exc).__name__}: {exc}", False

    # --- the alert command ---------------------------------------------------------------------
    def _cmd_env(self, event: dict) -> dict[str, str]:
        base = dict(os.environ if self.env is None else self.env)
        for key in ("HBWRAP_EVENT", "HBWRAP_JOB", "HBWRAP_RUN_ID", "HBWRAP_ATTEMPT", "HBWRAP_REASON",
                    "HBWRAP_EXIT_CODE", "HBWRAP_CHECKPOINT", "HBWRAP_EVENT_JSON", "HBWRAP_SUMMARY"):
            base.pop(key, None)  # a nested hbwrap must not leak its own values into ours

        def value(v) -> str:
            text = "" if v is None else str(v)
            return clean_text(text).replace("\0", "")[:ENV_VALUE_MAX_CHARS]

        base.update({
            "HBWRAP_EVENT": value(event.get("event")), "HBWRAP_JOB": value(event.get("job") or self.job),
            "HBWRAP_RUN_ID": value(event.get("run_id")), "HBWRAP_ATTEMPT": value(event.get("attempt")),
            "HBWRAP_REASON": value(event.get("reason")), "HBWRAP_CHECKPOINT": value(event.get("checkpoint")),
            "HBWRAP_SUMMARY": value(event.get("summary")),
            "HBWRAP_EVENT_JSON": value(json.dumps(event, ensure_ascii=False)),
        })
        if event.get("exit_code") is not None:
            base["HBWRAP_EXIT_CODE"] = value(event["exit_code"])
        return base

    def _run_cmd(self, event: dict) -> dict:
        """`sh -c CMD` with the event in its environment (never in its text); _Failed on non-zero, signal or timeout."""
        lane = self._lanes["alert-cmd"]
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", self.alert_cmd], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self._cmd_env(event),
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise _Failed(f"cannot start alert command: {exc.strerror or exc}") from None
        with self._cond:
            lane.proc = proc
        try:
            output, timed_out = self._collect(proc)
        finally:
            # Reaped under the lock, so close() never signals a process group that may have been recycled.
            with self._cond:
                try:
                    proc.wait()
                finally:
                    lane.proc = None
        text = mask_urls_in(mask_text(output.decode("utf-8", "replace"), self._secrets)).strip()
        code = proc.returncode
        if timed_out:
            raise _Failed(f"alert command timed out after {fmt_duration(self.cmd_timeout_s)} and was killed",
                          output=text or None)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            raise _Failed(f"alert command killed by signal {name}", output=text or None)
        if code:
            raise _Failed(f"alert command exited with code {code}", cmd_exit_code=code, output=text or None)
        return {"output": text} if text else {}

    def _collect(self, proc: subprocess.Popen) -> tuple[bytes, bool]:
        """Read the command's output (keeping the last CMD_OUTPUT_BYTES) until it ends or times out.

        On return the shell has exited but is not reaped (the caller reaps it).
        """
        fd = proc.stdout.fileno()
        buf = bytearray()
        deadline = time.monotonic() + self.cmd_timeout_s
        exited_at = None
        eof = timed_out = False
        try:
            while True:
                now = time.monotonic()
                if exited_at is None and _exited(proc.pid):
                    exited_at = now
                if exited_at is not None:
                    # background children may hold the pipe open: read what they write for a moment only
                    if eof or now - exited_at >= CMD_PIPE_LINGER_S or self._stop.is_set():
                        break
                elif now >= deadline or self._stop.is_set():
                    timed_out = not self._stop.is_set()
                    self._stop_cmd(proc)
                    break
                wait = max(0.0, min(0.1, deadline - now))
                if eof:
                    self._stop.wait(min(wait, 0.05))
                    continue
                ready, _, _ = select.select([fd], [], [], wait)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        eof = True
                    else:
                        buf += chunk
                        if len(buf) > 2 * CMD_OUTPUT_BYTES:
                            del buf[:-CMD_OUTPUT_BYTES]
        finally:
            proc.stdout.close()
            if not _exited(proc.pid):  # only after an unexpected error above
                self._stop_cmd(proc)
        return bytes(buf[-CMD_OUTPUT_BYTES:]), timed_out

    def _stop_cmd(self, proc: subprocess.Popen) -> None:
        """SIGTERM the command's process group, SIGKILL it CMD_TERM_GRACE_S later (at once when abandoned).

        The shell is never reaped here: as a zombie it keeps its pgid from being reused, so both signals
        reach the group we started and nothing else.
        """
        _kill_group(proc, signal.SIGTERM)
        end = time.monotonic() + (0.0 if self._stop.is_set() else CMD_TERM_GRACE_S)
        while not _exited(proc.pid) and time.monotonic() < end:
            time.sleep(0.02)
        _kill_group(proc, signal.SIGKILL)  # also whatever the shell left behind in its group
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass


def _exited(pid: int) -> bool:
    """Whether our child `pid` has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # reaped already (e.g. by a PID-1 supervisor's stray reaper)


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the group start_new_session made for `proc`; callers ensure the leader is not reaped yet."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
