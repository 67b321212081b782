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
    if parts.query:  # redis-py also reads ?password=...
        query = "&".join(_masked_pair(pair) for pair in parts.query.split("&"))
        parts = parts._replace(query=query)
    if not password:
        return urlunsplit(parts)
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}{port}"))


def _masked_pair(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    return f"{name}={MASK}" if sep and name.lower() == "password" else pair


def printable(text: object, limit: int = 200) -> str:
    """Untrusted text for a log line or message: control characters escaped, length bounded.

    An id that holds a newline cannot forge a second log line.
    """
    value = str(text)
    escaped = "".join(char if char.isprintable() else _escape(char) for char in value[:limit])
    return escaped + ("..." if len(value) > limit else "")


def _escape(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")
