"""Delivery of alerts off the main thread: the `Alerter`, one worker thread per target, and closing without blocking.

Every delivery runs on a background thread, one thread per target (each webhook URL, the ping URL, the
alert command), so one slow target never holds up another and each target sees its events in order
(a ping's /start always precedes its end). `notify` only decides and enqueues.

Closing has two forms. `close(wait_s)` blocks up to `wait_s`. A poll loop that must never block uses the
parts instead: `begin_close()`, then it polls `fileno()` (readable whenever a delivery finishes; it calls
`drain_wakeups()`) until `in_flight()` is false or its own 10 s pass, then `abandon(waited_s)`, which
records whatever is still queued or running as `alert_failed` and kills a running alert command's group.

Secrets: every URL that leaves this module (targets, reasons, warnings) goes through `mask_url` /
`mask_text` first; HTTP is in `webpost`, the alert command in `alertcmd`.
"""
from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable

from hbwrap.alerts.alertcmd import AlertCommand
from hbwrap.alerts.mask import mask_text, mask_url, mask_urls_in
from hbwrap.alerts.messages import (DEFAULT_ALERT_ON, PING_BODY_BYTES, PING_BODY_MAX_BYTES, TAIL_EVENTS,
                                    WEBHOOK_FORMATS, fmt_duration, hhmm, one_line, ping_action, ping_body,
                                    ping_endpoint, ping_line, summarize, trimmed_event, utf8_tail, webhook_body)
from hbwrap.alerts.webpost import DeliveryFailed, Poster

CHANNEL_WEBHOOK, CHANNEL_PING, CHANNEL_CMD = "webhook", "ping", "alert-cmd"
WARNING_MAX_CHARS = 400


class _Delivery:
    __slots__ = ("channel", "target", "alert_event", "send")

    def __init__(self, channel: str, target: str, alert_event: str, send: Callable[[], dict | None]):
        self.channel, self.target, self.alert_event, self.send = channel, target, alert_event, send


class _Lane:
    """One target's queue and worker thread: deliveries to it happen one at a time, in order."""

    def __init__(self, name: str):
        self.name = name
        self.queue: collections.deque[_Delivery] = collections.deque()
        self.current: _Delivery | None = None
        self.thread: threading.Thread | None = None

    def busy(self) -> bool:
        return bool(self.queue) or self.current is not None


def _warning(delivery: _Delivery, reason: str, tries) -> str:
    """The one line said on stderr for a target's first failed delivery (without the `hbwrap: ` prefix)."""
    how = f"{delivery.alert_event} event" + (f", {tries} tries" if isinstance(tries, int) and tries > 1 else "")
    if delivery.channel == CHANNEL_CMD:
        what = "alert command"
        reason = reason.removeprefix("alert command ")
    else:
        what = f"{delivery.channel} {delivery.target}"
    return one_line(f"{what} failed ({how}): {reason}", WARNING_MAX_CHARS)


class RunHistory:
    """What the current run has been through, as far as its texts need it: its stalls, the attempt that came
    after the last one (a success after a stall is a recovery), its latest `exit` event."""

    def __init__(self):
        self.run_id: str | None = None
        self.stalls: list[dict] = []
        self.after_stall: dict | None = None
        self.last_exit: dict | None = None

    def stall_reasons(self) -> list[str]:
        return [str(s["reason"]) for s in self.stalls if s.get("reason")]

    def track(self, event: dict) -> dict | None:
        """Learn `event`; for a success after a stall, the recovery facts."""
        name, run_id = event.get("event"), event.get("run_id")
        if name == "run_start" or run_id != self.run_id:
            self.run_id, self.stalls, self.after_stall, self.last_exit = run_id, [], None, None
        if name == "stall":
            self.stalls.append({"ts": event.get("ts"), "reason": event.get("reason"),
                                "checkpoint": event.get("checkpoint")})
            self.after_stall = None
        elif name == "exit":
            self.last_exit = event
        elif name == "attempt_start" and self.stalls and self.after_stall is None:
            self.after_stall = {"ts": event.get("ts"), "resume_from": event.get("resume_from"),
                                "attempt": event.get("attempt")}
        elif name == "success" and self.stalls:
            first = self.stalls[0]
            recovered_ts = (self.after_stall or {}).get("ts") or event.get("ts")
            return {"stalls": len(self.stalls), "stalled_at": first["ts"], "stall_reason": first["reason"],
                    "stalled_at_hhmm": hhmm(first["ts"]), "recovered_at": recovered_ts,
                    "recovered_at_hhmm": hhmm(recovered_ts),
                    "resumed_from": (self.after_stall or {}).get("resume_from")}
        return None


class Alerter:
    """Sends alerts (command, webhooks) and healthchecks.io pings for a job's events, never blocking the caller.

    `notify(event)` is called for every event the supervisor emits; `close()` (or the non-blocking parts, see
    the module docstring) before exiting. Every failure becomes one `record({...})` call (an `alert_failed`
    event) with URLs masked; the first failure of each target is also said through `warn(line)`, a line
    without the `hbwrap: ` prefix, called from a worker thread (or the closing thread): it must be thread-safe.
    """

    def __init__(self, *, job: str, alert_cmd: str | None, webhooks: list[str], webhook_format: str,
                 alert_on: frozenset[str] | None, ping_url: str | None, record: Callable[[dict], None],
                 output_tail: Callable[[int], bytes], env: dict[str, str] | None = None, timeout_s: float = 5.0,
                 retries: int = 2, cmd_timeout_s: float = 30.0, backoff_s: float = 0.5,
                 delivered: Callable[[dict], None] | None = None, warn: Callable[[str], None] | None = None):
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
        self._warn = warn
        self._ping_body_limit: int | None = None  # the server's Ping-Body-Limit (only the ping lane uses it)
        self._secrets = [u for u in [*self.webhooks, self.ping_url] if u]
        self._cond = threading.Condition(threading.RLock())
        self._stop = threading.Event()   # set when closing gives up: back-offs end, alert commands die
        self._poster = Poster(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, secrets=self._secrets,
                              stop=self._stop)
        self._command = AlertCommand(cmd=self.alert_cmd, job=job, env=env, timeout_s=cmd_timeout_s,
                                     secrets=self._secrets, lock=self._cond, stop=self._stop) if self.alert_cmd else None
        self._lanes: dict[str, _Lane] = {}
        self._warned: set[str] = set()   # lanes whose first failure was said
        self._closing = self._closed = self._abandoned = False
        # written by workers under the lock, so closing both ends (under the lock too) never races a write
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._history = RunHistory()

    # --- public --------------------------------------------------------------------------------
    @property
    def own_pids(self) -> set[int]:
        """Alert commands running now (a PID-1 supervisor must leave them to their Popen to reap)."""
        with self._cond:
            proc = self._command.proc if self._command is not None else None
            return {proc.pid} if proc is not None else set()

    def replay(self, events: list[dict]) -> None:
        """Learn the run's history without alerting (after a takeover: earlier stalls make a success 'recovered')."""
        with self._cond:
            for event in events:
                try:
                    self._history.track(event)
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

    def fileno(self) -> int:
        """A pipe's read end that becomes readable whenever a delivery finishes (-1 once released by abandon)."""
        return self._wake_r

    def drain_wakeups(self) -> None:
        """Empty the wake-up pipe (never blocks)."""
        with self._cond:
            fd = self._wake_r
        while fd >= 0:
            try:
                if not os.read(fd, 4096):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return

    def begin_close(self) -> None:
        """Accept no new events; the workers go on with what is queued and then end."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def in_flight(self) -> bool:
        """Whether any delivery is still queued or running (never after abandon: those are recorded)."""
        with self._cond:
            return not self._closed and any(lane.busy() for lane in self._lanes.values())

    def abandon(self, waited_s: float) -> None:
        """Give up on what is still queued or running: each becomes an `alert_failed` ("timeout at exit (still in
        flight after <waited_s>)"), a running alert command's group is killed, and the wake-up pipe is released.
        Call it once at the end, also when nothing is in flight. Never blocks, never raises."""
        try:
            self._abandon(waited_s)
        except Exception:
            pass

    def close(self, wait_s: float = 10.0) -> None:
        """Wait up to `wait_s` for queued and in-flight deliveries; record the rest as alert_failed. Never raises."""
        try:
            self.begin_close()
            deadline = time.monotonic() + max(0.0, wait_s)
            with self._cond:
                while not self._closed and any(lane.busy() for lane in self._lanes.values()):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            self.abandon(wait_s)
        except Exception:
            pass

    # --- deciding ------------------------------------------------------------------------------
    def _notify(self, event: dict) -> None:
        name = event.get("event")
        if name in ("alert_failed", "alert_output") or not isinstance(name, str):
            return
        with self._cond:
            if self._closing:
                return
            recovery = self._history.track(event)
            stall_reasons = self._history.stall_reasons()
            last_exit = self._history.last_exit
        alert = name in self.alert_on or (recovery is not None and "stall" in self.alert_on)
        action = ping_action(event) if self.ping_url else None
        alerting = bool(alert and (self.alert_cmd or self.webhooks))
        if not alerting and action is None:
            return
        # The output is read now, not when a worker gets to it: by then a restart may have written more. A ping
        # takes up to PING_BODY_MAX_BYTES of it; how much of that fits is known only when it is sent.
        raw = b""
        if action not in (None, "start") or (alerting and name in TAIL_EVENTS):
            want = PING_BODY_MAX_BYTES if action not in (None, "start") else PING_BODY_BYTES
            try:
                raw = bytes(self._output_tail(want + 4) or b"")
            except Exception:
                raw = b""
        sent = trimmed_event(event)
        extra = {}
        if recovery:
            extra = {"recovered": True, "stalls": recovery["stalls"], "stalled_at": recovery["stalled_at"],
                     "stall_reason": recovery["stall_reason"], "recovered_at": recovery["recovered_at"],
                     "resumed_from": recovery["resumed_from"]}
            extra = {k: v for k, v in trimmed_event(extra).items() if v is not None}
        if alerting:
            self._enqueue_alerts(name, sent, extra, summarize(sent, recovery),
                                 utf8_tail(raw, PING_BODY_BYTES) if name in TAIL_EVENTS else None)
        if action is not None:
            url = ping_endpoint(self.ping_url, action, event.get("run_id"))
            line = None if action == "start" else ping_line(sent, stall_reasons, last_exit)
            output = b"" if action == "start" else raw
            self._enqueue("ping", _Delivery(CHANNEL_PING, mask_url(url), name,
                                            lambda: self._ping(url, output, line)))

    def _enqueue_alerts(self, name: str, sent: dict, extra: dict, summary: str, tail: bytes | None) -> None:
        for url in self.webhooks:
            body = webhook_body(self.webhook_format, sent, summary, tail, extra)
            data = json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")
            self._enqueue(f"webhook {url}", _Delivery(
                CHANNEL_WEBHOOK, mask_url(url), name,
                lambda url=url, data=data: self._poster.post(url, data, "application/json")))
        if self._command is not None:
            cmd_event = {**sent, **extra, "summary": summary}
            self._enqueue("alert-cmd", _Delivery(
                CHANNEL_CMD, one_line(mask_urls_in(mask_text(self.alert_cmd, self._secrets)), 200), name,
                lambda: self._command.run(cmd_event)))

    def _enqueue(self, lane_name: str, delivery: _Delivery) -> None:
        with self._cond:
            if self._closing:
                return
            lane = self._lanes.get(lane_name)
            if lane is None:
                lane = self._lanes[lane_name] = _Lane(lane_name)
            lane.queue.append(delivery)
            if lane.thread is None:
                lane.thread = threading.Thread(target=self._work, args=(lane,),
                                               name=f"hbwrap-alert-{delivery.channel}", daemon=True)
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
            except DeliveryFailed as exc:
                failure = exc
            except Exception as exc:  # a bug must not kill the lane
                failure = DeliveryFailed(f"internal error: {type(exc).__name__}: {exc}")
            say = None
            with self._cond:
                # Recorded under the lock: abandon() either sees this delivery still in flight (and
                # records it as a timeout) or sees it finished, never both and never neither.
                if not self._abandoned:
                    if failure is not None:
                        reason = mask_text(failure.reason, self._secrets)
                        self._safe_record({"reason": reason, "channel": delivery.channel, "target": delivery.target,
                                           "alert_event": delivery.alert_event, **failure.fields})
                        say = self._first_failure(lane, delivery, reason, failure.fields.get("tries"))
                    elif self._delivered is not None:
                        try:
                            self._delivered({"channel": delivery.channel, "target": delivery.target,
                                             "alert_event": delivery.alert_event, **(info or {})})
                        except Exception:
                            pass
                lane.current = None
                self._wake()
                self._cond.notify_all()
            if say:
                self._safe_warn(say)  # outside the lock: a slow stderr must not hold up notify()

    def _first_failure(self, lane: _Lane, delivery: _Delivery, reason: str, tries) -> str | None:
        """The warning for a failed delivery if it is its target's first (caller holds the lock)."""
        if lane.name in self._warned:
            return None
        self._warned.add(lane.name)
        return _warning(delivery, reason, tries)

    def _wake(self) -> None:
        """Make fileno() readable (caller holds the lock); a full pipe is readable already."""
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def _safe_record(self, fields: dict) -> None:
        try:
            self._record({k: v for k, v in fields.items() if v is not None})
        except Exception:
            pass

    def _safe_warn(self, line: str) -> None:
        if self._warn is not None:
            try:
                self._warn(line)
            except Exception:
                pass

    def _abandon(self, waited_s: float) -> None:
        with self._cond:
            if self._closed:
                return
            self._closing = self._closed = True
            self._cond.notify_all()
            left: list[tuple[_Lane, _Delivery]] = []
            for lane in self._lanes.values():
                if lane.current is not None:
                    left.append((lane, lane.current))
                left.extend((lane, delivery) for delivery in lane.queue)
                lane.queue.clear()
            if left:
                self._abandoned = True
                self._stop.set()
                if self._command is not None:
                    self._command.kill()  # not reaped: its worker reaps only while holding this lock
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            self._wake_r = self._wake_w = -1
            reason = f"timeout at exit (still in flight after {fmt_duration(waited_s)})"
            says = [self._first_failure(lane, delivery, reason, None) for lane, delivery in left]
        for _, delivery in left:
            self._safe_record({"reason": reason, "channel": delivery.channel, "target": delivery.target,
                               "alert_event": delivery.alert_event})
        for say in says:
            if say:
                self._safe_warn(say)

    # --- pings ---------------------------------------------------------------------------------
    def _ping(self, url: str, output: bytes, line: str | None) -> dict:
        """One healthchecks ping. The server keeps only the first Ping-Body-Limit bytes of a body and says how
        many in every reply: the body is built now, to the limit of the last reply (10,000 before the first)."""
        limit = self._ping_body_limit or PING_BODY_BYTES
        data = ping_body(output, line, limit) if (output or line) else b""
        info = self._poster.post(url, data, "text/plain; charset=utf-8")
        header = info.pop("body_limit", None)
        try:
            value = int(header) if header is not None else 0
        except ValueError:
            value = 0
        if value > 0:
            self._ping_body_limit = min(value, PING_BODY_MAX_BYTES)
        return info
