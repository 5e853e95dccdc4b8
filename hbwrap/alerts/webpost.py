"""HTTP POSTs of webhooks and pings, with bounded retries; failures become `DeliveryFailed` with URLs masked.

HTTP uses the standard library (urllib.request) rather than requests/httpx: a POST of a small body
needs nothing more, hbwrap starts on every cron tick (requests alone costs ~100 ms of imports), and
there is no dependency to pin or audit. urllib (and with it ssl) is imported only by a worker thread,
the first time a webhook or ping is actually sent. It honours https_proxy/no_proxy.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from hbwrap import __version__
from hbwrap.alerts.mask import mask_text, url_problem
from hbwrap.alerts.messages import fmt_duration, one_line

RETRY_AFTER_MAX_S = 5.0
RESPONSE_SNIPPET_BYTES = 300


class DeliveryFailed(Exception):
    """A delivery (POST or alert command) that did not succeed: `reason` plus fields for the alert_failed record."""

    def __init__(self, reason: str, **fields):
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


@dataclass(frozen=True)
class Reply:
    status: int
    retry_after: str | None = None
    snippet: bytes = b""               # the start of an error reply
    body_limit: str | None = None      # Ping-Body-Limit of a good reply


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


class Poster:
    """POSTs with retries (5xx, 408, 429, connection errors and timeouts); `stop` set ends back-offs at once."""

    def __init__(self, *, timeout_s: float, retries: int, backoff_s: float, secrets: list[str],
                 stop: threading.Event):
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.backoff_s = max(0.0, float(backoff_s))
        self._secrets = secrets
        self._stop = stop

    def post(self, url: str, data: bytes, content_type: str) -> dict:
        """{"tries", "http_status", "body_limit"?} of the POST that went through; DeliveryFailed when it gives up."""
        problem = url_problem(url)
        if problem:
            raise DeliveryFailed(problem, tries=0)
        tries = 0
        while True:
            tries += 1
            delay = self.backoff_s * 2 ** (tries - 1)
            try:
                reply = self._post_once(url, data, content_type)
            except Exception as exc:
                reason, retryable = self._describe(exc, url)
                status = None
            else:
                status = reply.status
                if 200 <= status < 300:
                    info = {"tries": tries, "http_status": status}
                    if reply.body_limit is not None:
                        info["body_limit"] = reply.body_limit
                    return info
                reason = f"HTTP {status}"
                snippet = reply.snippet.decode("utf-8", "replace")
                text = one_line(snippet, RESPONSE_SNIPPET_BYTES) if snippet else ""
                if text:
                    reason += f": {text}"
                retryable = status >= 500 or status in (408, 429)
                try:
                    if reply.retry_after is not None:
                        delay = min(max(delay, float(reply.retry_after)), RETRY_AFTER_MAX_S)
                except ValueError:
                    pass
            if not retryable or tries > self.retries:
                raise DeliveryFailed(mask_text(reason, self._secrets), tries=tries, http_status=status)
            if self._stop.wait(delay):
                raise DeliveryFailed("timeout at exit", tries=tries, http_status=status)

    def _post_once(self, url: str, data: bytes, content_type: str) -> Reply:
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
                return Reply(resp.status, body_limit=resp.headers.get("Ping-Body-Limit"))
        except urllib.error.HTTPError as exc:
            try:
                snippet = exc.read(RESPONSE_SNIPPET_BYTES) or b""
            except Exception:
                snippet = b""
            finally:
                exc.close()
            return Reply(exc.code, exc.headers.get("Retry-After") if exc.headers else None, snippet)

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
