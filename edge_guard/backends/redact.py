"""Keeps secrets (API keys, URL credentials) out of every string a server backend stores or prints.

A server may echo the request in an error body (`Authorization: Bearer sk-…`), and a URL may
carry `user:password@`. `Redactor(url, key)` knows the secrets of one server (the key's value,
the URL's password and user info, their percent-encoded and Basic-auth forms) and blanks them
out of any text; it also blanks the value of any `Authorization:` / API-key field and the user
info of any URL it sees, known or not. `safe_url(url)` drops a URL's user info.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "[redacted]"
MIN_SECRET = 4  # shorter strings are not blanked everywhere (the patterns below still apply)

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@\"'<>]+@")
_AUTH_FIELD = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api[_-]?key|access[_-]?token)"
    r"([\"']?\s*[:=]\s*[\"']?)"
    r"(?:(bearer|basic|token)\s+)?"
    r"[^\s\"',;}&]+"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?!\[redacted\])[A-Za-z0-9._~+/=\-]{8,}")  # a token


def _auth_repl(m: re.Match[str]) -> str:
    scheme = f"{m.group(3)} " if m.group(3) else ""
    return f"{m.group(1)}{m.group(2)}{scheme}{MASK}"


def safe_url(url: str) -> str:
    """`url` without its `user:password@` part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def url_credentials(url: str) -> tuple[str, str] | None:
    """The (user, password) a URL carries, percent-decoded; None when it has none."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret)}


class Redactor:
    """Blanks one server's secrets (and any credential-looking field) out of text."""

    def __init__(self, url: str = "", key: str | None = None, extra: Iterable[str] = ()) -> None:
        secrets: set[str] = set()
        for s in (key, *extra):
            if s:
                secrets |= _forms(s)
        creds = url_credentials(url) if url else None
        if creds is not None:
            user, password = creds
            userinfo = urlsplit(url).netloc.rpartition("@")[0]
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            secrets |= {userinfo, basic} | (_forms(password) if password else set())
            secrets |= _forms(f"{user}:{password}")
        self.secrets = sorted((s for s in secrets if len(s) >= MIN_SECRET), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, MASK)
        text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
        text = _AUTH_FIELD.sub(_auth_repl, text)
        return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
