"""Masking of secrets in webhook and ping URLs, and the check that a URL can be one; a leaf (imports nothing of ours).

Webhook and ping URLs carry their credentials in the URL itself, so every URL that leaves hbwrap
(targets, reasons, exception texts, response snippets, alert-command output, `config show`) goes
through `mask_url` / `mask_text` first.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
# A path segment is kept only if every piece between - _ . ~ looks like a word or a small number:
# lowercase, Capitalised or camelCase words, short acronyms, short numbers, api versions.
_PLAIN_PIECE_RE = re.compile(r"(?=.{1,24}$)(?:[a-z]{1,16}|[A-Z][a-z]{1,15})(?:[A-Z][a-z]{1,15}){0,3}"
                             r"|[A-Z]{1,4}|[0-9]{1,4}|v[0-9]{1,2}")
_PIECE_SPLIT_RE = re.compile(r"[-_.~]")
_URL_IN_TEXT_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def _plain_segment(segment: str) -> bool:
    if not segment:
        return True
    if len(segment) > 40 or _UUID_RE.search(segment):
        return False
    return all(p == "" or _PLAIN_PIECE_RE.fullmatch(p) for p in _PIECE_SPLIT_RE.split(segment))


def mask_url(url: str) -> str:
    """`url` with its secrets hidden, its scheme and host kept so a human still recognises it.

    Hidden: user-info (`https://***@host`), every path segment that is not a plain word or a short
    number (Slack `T…/B…/secret`, Discord `<id>/<token>`, healthchecks UUIDs and ping keys), every
    query value (`?rid=***`) and the fragment. Never raises; an unparsable URL becomes `***`.
    """
    try:
        parts = urlsplit(str(url).strip())
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MASK + "@" + netloc.rpartition("@")[2]
        path = "/".join(seg if _plain_segment(seg) else MASK for seg in parts.path.split("/"))
        query = ""
        if parts.query:
            query = "&".join(p.partition("=")[0] + "=" + MASK if "=" in p else MASK
                             for p in parts.query.split("&") if p)
        fragment = MASK if parts.fragment else ""
        return urlunsplit((parts.scheme, netloc, path, query, fragment))
    except Exception:
        return MASK


def secret_pieces(url: str) -> list[str]:
    """Substrings of `url` that must never be shown (what mask_url hides), longest first."""
    pieces = []
    try:
        parts = urlsplit(str(url).strip())
    except Exception:
        return [str(url)] if url else []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        pieces += [userinfo, userinfo.partition(":")[2]]  # the user name alone is no secret
    pieces += [seg for seg in parts.path.split("/") if not _plain_segment(seg)]
    if parts.query:
        pieces.append(parts.query)
        pieces += [p.partition("=")[2] if "=" in p else p for p in parts.query.split("&")]
    if parts.fragment:
        pieces.append(parts.fragment)
    # very short pieces (a `create=1`) are no secret and would mangle unrelated text
    return sorted({p for p in pieces if len(p) >= 4}, key=len, reverse=True)


def mask_text(text: str, secrets: list[str]) -> str:
    """`text` with every occurrence of a secret URL replaced by its mask.

    Parts of a secret URL that appear on their own (the path in an http.client error, a token echoed
    by a server, a password) are replaced by `***` too.
    """
    if not text:
        return text
    text = str(text)
    urls = sorted({s for s in secrets if s}, key=len, reverse=True)
    for url in urls:
        text = text.replace(url, mask_url(url))
    for url in urls:
        for piece in secret_pieces(url):
            text = text.replace(piece, MASK)
    return text


def mask_urls_in(text: str) -> str:
    """Every URL-looking substring of free text (an alert command, its output) masked with `mask_url`."""
    return _URL_IN_TEXT_RE.sub(lambda m: mask_url(m.group(0)), text) if text else text


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook or ping URL (message shows it masked), or None if it can."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{mask_url(url)} is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return f"{mask_url(url)} is not an http:// or https:// URL"
    if not parts.hostname:
        return f"{mask_url(url)} has no host"
    return None

