"""Which inputs a job may name: the operator's grant, checked where a job is submitted and again
where its inputs are fetched.

    [files]
    input_roots = /srv/data, /shared           ; server paths anyone may name (and file:// URIs)
    uri_schemes = https, http                  ; schemes of input and resource URIs (s3, ... through fsspec)
    fetch_allow = 10.1.2.0/24, 127.0.0.1:8080  ; internal addresses a fetch may reach
    fetch_max_bytes = 1073741824
    fetch_timeout = 300

A path on the server is an input when the Python API or the CLI submits it (they run as the OS
user who reads it: origin LOCAL), or when it resolves inside an input root (any origin; over
HTTP, origin WEB, the only way). ``file:`` reaches only inside the input roots. A network fetch
resolves the name once, refuses loopback, private, link-local, unspecified, multicast and
reserved addresses, and moi's own Redis and cluster, unless ``fetch_allow`` lists them, and
connects to the address it checked (see ``moi.jobfiles.uri_transfers``); the host of a URI of any other scheme
(fsspec's: ftp, sftp, ...) is checked the same way before fsspec connects. The submitting side writes the policy
into the job's transfers (``carried``); the engine, which reads no settings, applies that.

A refusal is one line, the same whether or not its target exists, and says nothing of its content.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import stat
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moi.core.errors import InputRefused
from moi.core.files_settings import host_port, parse_allow, split_list, under
from moi.core.redact import printable
from moi.jobfiles.by_descriptor import DIRECTORY, FILE

if TYPE_CHECKING:
    from moi.core.config import Settings

LOCAL, WEB = "local", "web"  # where a submission comes from: the library or CLI, or the HTTP API
FETCHED = ("http", "https")  # schemes moi fetches itself; "file" is the input roots'; any other goes to fsspec
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# One answer for a name that does not resolve and one that resolves to an internal address, so
# that a refusal does not tell a user which internal names exist.
INTERNAL = "it names a host this server does not fetch from (one that does not resolve, or is internal)"
# Schemes whose "host" is a bucket or container, not a host: their store's endpoint is the operator's.
BUCKETS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl")
_PORTS = {"http": 80, "https": 443, "ftp": 21, "sftp": 22, "ssh": 22, "webdav": 80, "dav": 80, "davs": 443, "smb": 445}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # an IPv4 address in its last 32 bits


@dataclass(frozen=True)
class Policy:
    """The grant one job's inputs are checked against; the default refuses every internal address."""

    roots: tuple[str, ...] = ()  # resolved (realpath) directories
    schemes: tuple[str, ...] = FETCHED
    allow: tuple[str, ...] = ()  # networks or address:port, as fetch_allow writes them
    internal: tuple[str, ...] = ()  # moi's own Redis and cluster, address:port: refused unless allowed by port
    max_bytes: int = 1 << 30
    timeout: float = 300.0
    _rules: tuple[tuple[Any, int | None], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rules", tuple(parse_allow(self.allow)))

    # travelling with the job ------------------------------------------------------------

    def carried(self) -> dict[str, Any]:
        """The policy as the job's transfers keep it (JSON-able, for the engine)."""
        return {
            "roots": list(self.roots),
            "schemes": list(self.schemes),
            "allow": list(self.allow),
            "internal": list(self.internal),
            "max_bytes": self.max_bytes,
            "timeout": self.timeout,
        }

    @classmethod
    def from_carried(cls, value: Mapping[str, Any] | None) -> Policy:
        """The policy a job's transfers carry; the strict default for a job stored without one."""
        if not value:
            return cls()
        return cls(
            roots=tuple(value.get("roots", ())),
            schemes=tuple(value.get("schemes", FETCHED)),
            allow=tuple(value.get("allow", ())),
            internal=tuple(value.get("internal", ())),
            max_bytes=int(value.get("max_bytes", 1 << 30)),
            timeout=float(value.get("timeout", 300.0)),
        )

    # URIs --------------------------------------------------------------------------------

    def check_uri(self, name: str, uri: str, origin: str = LOCAL, resolve: bool = True) -> None:
        """InputRefused unless ``uri``'s scheme is granted, a ``file:`` one is inside an input root,
        and (``resolve``) a network one's host resolves only to addresses a fetch may reach."""
        why = self.uri_problem(uri, origin, resolve)
        if why:
            raise InputRefused(name, why)

    def uri_problem(self, uri: str, origin: str = LOCAL, resolve: bool = True) -> str | None:
        """Why ``uri`` is refused (one line), or None."""
        try:
            parts = urllib.parse.urlsplit(uri)
            port = parts.port
        except ValueError:
            return "it is not a URI moi can read"
        scheme = parts.scheme.lower()
        if scheme == "file":
            return self._file_problem(uri, origin)
        if scheme not in self.schemes:
            allowed = ", ".join(self.schemes) or "none"
            return f"{printable(scheme, 40)}: URIs are not allowed here (allowed: {allowed}; [files] uri_schemes)"
        if scheme in FETCHED and not parts.hostname:
            return "it names no host"
        if scheme not in FETCHED and "::" in uri:  # fsspec would chain it: a second URI no check has seen
            return "a chained URI (with '::') is not allowed; name one file"
        if resolve and parts.hostname and scheme not in BUCKETS:  # any scheme: ftp:// reaches hosts as http:// does
            return self.host_problem(parts.hostname, port or _PORTS.get(scheme, 0))[1]
        return None

    def _file_problem(self, uri: str, origin: str) -> str | None:
        parts = urllib.parse.urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            return "a file:// URI names a file on this host: file:///path"
        if self.inside_roots(urllib.parse.unquote(parts.path)) is None:
            return outside_roots(origin, "file:// URI")
        return None

    # addresses ---------------------------------------------------------------------------

    def host_problem(self, host: str, port: int) -> tuple[list[Address], str | None]:
        """``host`` resolved once, and why a fetch may not connect there (None: it may, to these addresses).

        Every address the name resolves to must be allowed, so which one is used does not matter.
        """
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            return [], INTERNAL
        addresses = list(dict.fromkeys(_address(str(entry[4][0])) for entry in found))
        if not addresses or any(not self.reachable(address, port) for address in addresses):
            return addresses, INTERNAL
        return addresses, None

    def reachable(self, address: Address, port: int) -> bool:
        """Whether a fetch may connect to ``address:port``: a public address that is not moi's own,
        or one that fetch_allow lists (moi's own only by an entry with its port)."""
        plain = _unmapped(address)
        allowed = [(rule, rule_port) for rule, rule_port in self._rules if plain in rule and rule_port in (None, port)]
        if f"{_text(plain)}:{port}" in self.internal:
            return any(rule_port == port for _, rule_port in allowed)
        return bool(allowed) or _public(plain)

    # paths -------------------------------------------------------------------------------

    def inside_roots(self, path: str) -> str | None:
        """``path`` resolved (symbolic links followed), when that is inside an input root; else None."""
        if not self.roots or not os.path.isabs(path) or "\x00" in path:
            return None
        real = os.path.realpath(path)
        return real if any(under(real, root) for root in self.roots) else None

    def checked_path(self, name: str, path: str) -> str:
        """``path`` resolved, when that is inside an input root; else InputRefused, the same whether or
        not anything is there."""
        real = self.inside_roots(path)
        if real is None:
            raise InputRefused(name, outside_roots(WEB, "server path"))
        return real

    def read_in_roots(self, name: str, path: str, limit: int) -> bytes:
        """The bytes of the regular file ``path`` names inside an input root, read once from the
        descriptor that was checked, at most ``limit`` of them (InputRefused otherwise): what a
        service's validators check is what is copied, whatever is swapped in at ``path`` meanwhile."""
        with open(self.open_in_roots(name, path), "rb") as granted:
            content = granted.read(limit + 1)
        if len(content) > limit:
            raise InputRefused(name, f"it is over {limit} bytes ([moi] max_upload)")
        return content

    def open_in_roots(self, name: str, path: str) -> int:
        """A file descriptor of the regular file ``path`` resolves to inside an input root.

        What was checked is what is opened: from the root down, each name is opened relative to
        the one before without following links, so a link swapped in after the check is refused.
        (The library's own paths never come here: its user opens them as themselves.)
        """
        real = self.checked_path(name, path)
        root = next(root for root in self.roots if under(real, root))
        names = [part for part in os.path.relpath(real, root).split(os.sep) if part not in ("", ".")]
        fd = -1
        try:
            fd = os.open(root, DIRECTORY)
            for index, part in enumerate(names):
                inner = os.open(part, FILE if index == len(names) - 1 else DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = inner
            if not names or not _is_regular(fd):
                raise InputRefused(name, f"{printable(path)} is not a regular file")
        except OSError as error:
            _close(fd)
            raise InputRefused(name, f"cannot read {printable(path)}: {error.strerror or error}") from None
        except InputRefused:
            _close(fd)
            raise
        os.set_blocking(fd, True)
        return fd


def outside_roots(origin: str, what: str) -> str:
    """The one refusal of a path outside the input roots, whatever is (or is not) there."""
    if origin == LOCAL:
        return (
            f"a {what} is read only inside an input root ([files] input_roots); "
            "give a plain path instead, which is copied as you can read it"
        )
    return f"a {what} is an input only inside an input root the operator lists ([files] input_roots); upload the file"


def of_settings(settings: Settings, internal: Iterable[str] = ()) -> Policy:
    """The policy the settings grant; ``internal``: moi's own addresses (see ``own_endpoints``)."""
    return Policy(
        roots=tuple(os.path.realpath(root) for root in split_list(settings.input_roots)),
        schemes=tuple(scheme.lower() for scheme in split_list(settings.uri_schemes)),
        allow=tuple(split_list(settings.fetch_allow)),
        internal=tuple(internal),
        max_bytes=settings.fetch_max_bytes,
        timeout=settings.fetch_timeout,
    )





def own_endpoints(redis_url: str, connection_files: Iterable[str | None]) -> list[str]:
    """moi's own Redis and cluster as ``address:port``: a fetch never reaches them by accident."""
    found: list[tuple[str, int]] = []
    netloc = urllib.parse.urlsplit(redis_url).netloc.rpartition("@")[2]
    for endpoint in netloc.split(","):  # a sentinel URL names several
        host, port = host_port(endpoint)
        found.append((host, port or 6379))
    for path in connection_files:
        found.extend(_cluster_ports(path))
    endpoints = []
    for host, port in found:
        with contextlib.suppress(OSError, UnicodeError, ValueError):
            for entry in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                endpoints.append(f"{_text(_unmapped(_address(str(entry[4][0]))))}:{port}")
    return list(dict.fromkeys(endpoints))


def _cluster_ports(path: str | None) -> list[tuple[str, int]]:
    """The controller's address and ports, from its client connection file (none when it cannot be read)."""
    if not path:
        return []
    try:
        with open(path) as handle:
            described = json.load(handle)
        host = str(described.get("location") or described["interface"].rpartition("//")[2])
    except (OSError, ValueError, KeyError, AttributeError):
        return []
    ports = [value for value in described.values() if isinstance(value, int) and 0 < value < 65536]
    lists = [value for value in described.values() if isinstance(value, list)]
    ports += [port for value in lists for port in value if isinstance(port, int)]
    return [(host, port) for port in ports]



def _address(text: str) -> Address:
    return ipaddress.ip_address(text.partition("%")[0])  # a scope (fe80::1%eth0) is not part of the address


def _unmapped(address: Address) -> Address:
    """An IPv6 address that carries an IPv4 one as that IPv4 address: IPv4-mapped (::ffff:127.0.0.1),
    6to4 (2002:7f00:1::, which Python 3.11 counts as global), Teredo's client, NAT64 (64:ff9b::/96)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _public(address: Address) -> bool:
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
    )


def _text(address: Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)



def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)
