"""Text that is safe to show: URLs without their password, untrusted text without control characters.

Every message, frame, log line and page moi writes goes through these where
it shows a Redis URL or an id, name or other text a client chose.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def masked_url(url: str) -> str:
    """``url`` with its password (and a user name's secret part) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL at all: show nothing that could be a secret
        return "<unparseable url>"
    if parts.query:  # redis-py also reads ?password=..., and moi ?sentinel_password=...
        query = "&".join(_masked_pair(pair) for pair in parts.query.split("&"))
        parts = parts._replace(query=query)
    if not password:
        return urlunsplit(parts)
    # The hosts as written: a sentinel URL names several (host:port,host:port), which urlsplit cannot parse.
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{hosts}"))


def _masked_pair(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    return f"{name}={MASK}" if sep and name.lower().endswith("password") else pair  # sentinel_password too


def printable(text: object, limit: int = 200) -> str:
    """Untrusted text for a log line or message: control characters escaped, length bounded.

    An id that holds a newline cannot forge a second log line.
    """
    value = str(text)
    escaped = "".join(char if char.isprintable() else _escape(char) for char in value[:limit])
    return escaped + ("..." if len(value) > limit else "")


def _escape(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")
