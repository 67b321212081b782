"""Moving files by URI, for job files: inputs and resources in, outputs out.

``file://`` and ``http(s)://`` always work; any other scheme goes through fsspec
when it is installed (``pip install moi[fsspec]``: s3, gcs, sftp, ...). A
``|gunzip`` suffix on a URI decompresses what it names as it is fetched.
Resources are fetched once per host into a cache shared by every job there
(``MOI_RESOURCE_CACHE``, by default ``~/.cache/moi/resources``), under a file
lock, so ten jobs starting at once on one host fetch a resource once.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from .errors import FetchFailed

GUNZIP = "|gunzip"
CHUNK = 1 << 20
HTTP_TIMEOUT = 60.0


def is_uri(text: str) -> bool:
    """Whether an input names a URI (``scheme://...``) rather than a local path."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and len(scheme) > 1


def name_of(uri: str) -> str:
    """The file name a URI gives an input: the last part of its path, without ``|gunzip`` and ``.gz``."""
    plain, gunzip = _split(uri)
    name = os.path.basename(urllib.parse.urlsplit(plain).path.rstrip("/")) or "input"
    return name[: -len(".gz")] if gunzip and name.endswith(".gz") else name


def fetch(uri: str, target: str) -> None:
    """Copy what ``uri`` names to the file ``target``; FetchFailed says why it could not."""
    plain, gunzip = _split(uri)
    partial = f"{target}.partial"
    try:
        with _reading(plain) as source, open(partial, "wb") as out:
            shutil.copyfileobj(gzip.GzipFile(fileobj=source) if gunzip else source, out, CHUNK)
        os.replace(partial, target)
    except FetchFailed:
        _forget(partial)
        raise
    except (OSError, EOFError, ValueError, urllib.error.URLError) as error:
        _forget(partial)
        raise FetchFailed(uri, _reason(error)) from None


def upload(directory: str, uri: str) -> None:
    """Copy a directory's files to ``uri`` (a ``file://`` directory, or anything fsspec can write)."""
    scheme = urllib.parse.urlsplit(uri).scheme
    try:
        if scheme == "file":
            shutil.copytree(directory, _local_path(uri), dirs_exist_ok=True, symlinks=True)
            return
        filesystem, root = _fsspec(uri).core.url_to_fs(uri)
        filesystem.put(directory.rstrip("/") + "/", root, recursive=True)
    except FetchFailed:
        raise
    except Exception as error:  # fsspec's backends raise their own errors
        raise FetchFailed(uri, _reason(error)) from None


def resource(uri: str, cache: str) -> str:
    """The path of ``uri`` in this host's cache, fetched first if no job here has fetched it yet."""
    os.makedirs(cache, mode=0o700, exist_ok=True)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:32]
    path = os.path.join(cache, digest)
    if os.path.exists(path):
        return path
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first job here fetches; the others wait, then find it
        if not os.path.exists(path):
            fetch(uri, path)
    return path


def default_cache() -> str:
    configured = os.environ.get("MOI_RESOURCE_CACHE")
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "moi", "resources")


def _split(uri: str) -> tuple[str, bool]:
    return (uri[: -len(GUNZIP)], True) if uri.endswith(GUNZIP) else (uri, False)


@contextmanager
def _reading(uri: str) -> Iterator[IO[bytes]]:
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "file":
        with open(_local_path(uri), "rb") as handle:
            yield handle
    elif scheme in ("http", "https"):
        with urllib.request.urlopen(uri, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310 (the scheme is checked)
            yield answer
    else:
        with _fsspec(uri).open(uri, "rb") as handle:
            yield handle


def _local_path(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise FetchFailed(uri, "a file:// URI names a file on this host: file:///path")
    return urllib.parse.unquote(parts.path)


def _fsspec(uri: str):  # type: ignore[no-untyped-def]
    try:
        import fsspec
    except ImportError:
        scheme = urllib.parse.urlsplit(uri).scheme
        raise FetchFailed(uri, f"{scheme}:// needs fsspec: pip install 'moi[fsspec]'") from None
    return fsspec


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _forget(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
