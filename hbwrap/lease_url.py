"""The --lease-url value: checked, its hbwrap_schema parameter taken out, shown masked, its secrets scrubbed from text.

Importing this module does not import psycopg; `parse_lease_url` does, to let libpq check the URL.
"""
from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import unquote

from hbwrap.errors import HbwrapError, LeaseStoreError, UsageError

SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
SECRET_KEY_RE = re.compile(r"pass|secret|token|key", re.IGNORECASE)
MASK = "***"
LIBPQ_HINTS = ("Is the server running", "This probably means", "before or while processing")  # not news


@dataclass(frozen=True)
class LeaseUrl:
    """A checked lease URL: what libpq gets, the schema asked for, the masked form, the secrets in it."""

    conninfo: str
    schema: str | None
    masked: str
    secrets: tuple[str, ...]

    def scrub(self, text: str) -> str:
        """`text` with every secret of the URL replaced by ***, on one line."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        lines = [ln.strip() for ln in str(text).splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith(LIBPQ_HINTS)]
        return re.sub(r"\s+", " ", "; ".join(lines))[:400]


def _split_url(url: str) -> tuple[str, str, str, str]:
    """scheme, netloc, path, query of a libpq URL (which may list several host:port pairs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", "", ""
    rest, _, _fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    return scheme, netloc, slash + path, query


def parse_lease_url(url: str, option: str = "--lease-url") -> LeaseUrl:
    """Check `url` (exit 2 naming `option` when it cannot be a PostgreSQL URL) and take hbwrap_schema out."""
    url = str(url).strip()
    scheme, netloc, path, query = _split_url(url)
    if scheme.lower() not in ("postgresql", "postgres"):
        raise UsageError(f"{option}: expected a postgresql:// URL")
    found: list[str] = []
    userinfo, at, hosts = netloc.rpartition("@")
    shown_netloc = netloc
    if at:
        user, colon, password = userinfo.partition(":")
        found += [userinfo, password, unquote(password)] if colon else []
        shown_netloc = f"{user}:{MASK}@{hosts}" if colon else netloc
    for entry in filter(None, hosts.split(",")):  # host[:port], several for libpq's multi-host URLs
        port = entry.rpartition("]")[2].rpartition(":")[2] if ":" in entry.rpartition("]")[2] else ""
        if ":" in entry.rpartition("]")[2] and not (port.isdigit() and 0 < int(port) < 65536):
            raise UsageError(f"{option}: invalid port {port!r} (a number 1-65535)")
    kept, shown, schema = [], [], None
    for item in (p for p in query.split("&") if p):
        key, eq, value = item.partition("=")
        if key == "hbwrap_schema":
            schema = unquote(value)
            if not SCHEMA_RE.fullmatch(schema):
                raise UsageError(f"{option}: hbwrap_schema must be a plain SQL name ([A-Za-z_][A-Za-z0-9_]*, "
                                 f"at most 63 characters)")
            shown.append(item)
            continue
        kept.append(item)
        if eq and SECRET_KEY_RE.search(key):
            found += [value, unquote(value)]
            shown.append(f"{key}={MASK}")
        else:
            shown.append(item)
    conninfo = f"{scheme}://{netloc}{path}" + ("?" + "&".join(kept) if kept else "")
    masked = f"{scheme}://{shown_netloc}{path}" + ("?" + "&".join(shown) if shown else "")
    found += [url, conninfo]
    parsed = LeaseUrl(conninfo, schema, masked,
                      tuple(sorted({s for s in found if s}, key=len, reverse=True)))
    psycopg = need_psycopg()
    try:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise UsageError(f"{option}: {parsed.scrub(str(exc))} (in {masked})") from None
    return parsed


def mask_lease_url(url: str) -> str:
    """The URL with its password and secret parameters replaced by ***; never raises."""
    try:
        return parse_lease_url(url).masked
    except HbwrapError:
        scheme, netloc, _path, _query = _split_url(str(url))
        return f"{scheme}://{MASK}" if scheme else MASK


def need_psycopg():
    """The psycopg module, or a LeaseStoreError saying how to install it."""
    try:
        import psycopg
        import psycopg.conninfo
    except ImportError:
        raise LeaseStoreError("--lease-url needs psycopg 3: pip install 'hbwrap[postgres]'") from None
    return psycopg


def default_host() -> str:
    return socket.gethostname()


def new_holder_id(host: str) -> str:
    """A holder id unique to this process and this start: host, pid and a random token."""
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"
