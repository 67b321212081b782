"""Job files: a directory per job, inputs copied in, outputs listed and read back, confined to it.

A job submitted with ``files=`` (or ``workdir=True``) gets ``<jobs root>/<job id>/``
(``MOI_JOBS_DIR`` / ``[moi] jobs_dir``; by default ``<state dir>/jobs``) holding
``input/`` (the inputs, copied in before the job is queued), ``output/`` and
``tmp/``. The job runs in it, with ``$INPUT``, ``$OUTPUT``, ``$TEMP`` and ``$CPU``
set; a Python job gets its path as ``workdir``. Anything written under the
directory is the job's output; its info object keeps a ``files`` summary (count
and total size), never the list.

Reading is confined: a path is split into names, and each is opened relative to
the directory before it with ``O_NOFOLLOW``, so ``..``, an absolute path, a NUL
byte, or a symbolic link anywhere on the way (even one swapped in between a
check and the open) is refused, and nothing outside the directory is read.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from moi.core import values
from moi.core.errors import InputRefused, InvalidId, MoiError, NoSuchFile, PathRefused, UnknownId
from moi.core.info import is_uuid
from moi.core.redact import printable
from moi.jobfiles import fetch, input_policy
from moi.jobfiles.confined import DIRECTORY, FILE, tree
from moi.storage import loops, process
from moi.storage.store import Store

log = logging.getLogger("moi.files")

INPUT, OUTPUT, TEMP, RESOURCE = "input", "output", "tmp", "resource"
COPY_CHUNK = 1 << 20
NAME_MAX = 255  # bytes of one file name on Linux's file systems

Source = str | os.PathLike[str] | bytes | IO[bytes]
Inputs = Sequence[str | os.PathLike[str]] | Mapping[str, Source]


@dataclass(frozen=True)
class Entry:
    """One entry of a job's files: its path in the job directory, whether it is a directory, its size."""

    path: str
    is_dir: bool
    size: int


# where -------------------------------------------------------------------------------


def directory_of(job_id: str, info: Mapping[str, Any] | None = None) -> str:
    """Where a job's directory is, whether or not it exists: ``<jobs root>/<id>``, or where
    ``info`` says it moved to (a service's per-state roots, see ``moi.services.places``)."""
    if not is_uuid(job_id):
        raise InvalidId(job_id)
    moved = info.get("directory") if info is not None else None
    if isinstance(moved, str) and moved:
        return _checked_move(job_id, moved)
    return os.path.join(process.settings().jobs_root, job_id)


def current_directory(job_id: str) -> str:
    """``directory_of`` the job as its info object now says (one read)."""
    if not is_uuid(job_id):
        raise InvalidId(job_id)
    try:
        info = process.store().get(job_id)
    except UnknownId:  # gone: it has no files either, which the open that follows says
        return directory_of(job_id)
    return directory_of(job_id, info)


def _checked_move(job_id: str, path: str) -> str:
    """A moved directory as an info object names it, trusted only as moi makes one: an absolute
    normal path ending in the job's id, a real directory (no link), owned by this user."""
    if os.path.isabs(path) and os.path.normpath(path) == path and os.path.basename(path) == job_id:
        try:
            held = os.lstat(path)
        except OSError:
            return path  # gone (removed, or on a host that does not see it): reading it finds nothing
        if stat.S_ISDIR(held.st_mode) and held.st_uid == os.getuid():
            return path
    raise PathRefused(job_id, path, "its info names a directory moi did not make for it")


# submitting: the directory and the inputs ----------------------------------------------


def prepare(
    job_id: str,
    inputs: Inputs | None,
    resources: Mapping[str, str] | None = None,
    outputs: str | None = None,
    root: str | None = None,
    origin: str = input_policy.LOCAL,
) -> tuple[str, dict[str, Any]]:
    """Make the job's directory (under ``root``, by default the jobs root) and copy the local inputs
    into its ``input/``.

    Returns its path and what the engine moves: inputs and resources given by URI
    (fetched there before the call, as the policy it carries allows) and where ``output/``
    goes after a success. ``origin``: LOCAL (the library or CLI, whose user reads any path
    they name) or WEB (a path only inside the input roots; see ``moi.jobfiles.input_policy``).
    Nothing is left behind when an input is refused (InputRefused).
    """
    named = builtins.list(_named(inputs))
    fetches = bool(resources) or any(isinstance(source, str) and fetch.is_uri(source) for _, source in named)
    policy = submit_policy(fetches)
    directory = os.path.join(root, job_id) if root else directory_of(job_id)
    os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
    os.mkdir(directory, 0o700)
    transfers: dict[str, Any] = {"inputs": [], "resources": [], "outputs": outputs or "", "policy": policy.carried()}
    try:
        for name in (INPUT, OUTPUT, TEMP):
            os.mkdir(os.path.join(directory, name), 0o700)
        transfers["inputs"] = _place_inputs(os.path.join(directory, INPUT), named, policy, origin)
        if resources:
            os.mkdir(os.path.join(directory, RESOURCE), 0o700)
            transfers["resources"] = _resources(resources, policy, origin)
    except BaseException:
        remove_directory(directory)
        raise
    return directory, transfers


def _place_inputs(
    input_dir: str, named: Sequence[tuple[str, Source]], policy: input_policy.Policy, origin: str
) -> builtins.list[builtins.list[str]]:
    """Copy the local inputs into ``input_dir``; the ``[name, uri]`` of those the engine fetches."""
    fetched = []
    seen: set[str] = set()
    for name, source in named:
        _check_name(name, seen)
        if isinstance(source, str) and fetch.is_uri(source):
            policy.check_uri(name, source, origin)  # refused now; checked again where it is fetched
            fetched.append([name, source])  # fetched on the engine, where it runs
        elif origin != input_policy.LOCAL and isinstance(source, (str, os.PathLike)):
            with builtins.open(policy.open_in_roots(name, os.fspath(source)), "rb") as granted:
                _copy_in(input_dir, name, granted)
        else:
            _copy_in(input_dir, name, source)
    return fetched


def _resources(
    resources: Mapping[str, str], policy: input_policy.Policy, origin: str
) -> builtins.list[builtins.list[str]]:
    """The ``[name, uri]`` of each resource, checked as the policy says (fetched on the engine)."""
    checked = []
    for name, uri in resources.items():
        _check_name(name, set())
        if not isinstance(uri, str) or not fetch.is_uri(uri):
            raise InputRefused(name, "a resource is given by URI (file://, http(s)://, ...)")
        policy.check_uri(name, uri, origin)
        checked.append([name, uri])
    return checked


def submit_policy(fetches: bool) -> input_policy.Policy:
    """The grant of the settings; with moi's own Redis and cluster addresses when a URI is to be fetched."""
    settings = process.settings()
    if not fetches:
        return input_policy.of_settings(settings)
    files = []
    for name in process.context_specs():
        with contextlib.suppress(MoiError, OSError, ImportError):  # a context that cannot be read adds no ports
            files.append(process.context_spec(name).connection_file())
    return input_policy.of_settings(settings, input_policy.own_endpoints(process.store().url, files))


def _named(inputs: Inputs | None) -> Iterator[tuple[str, Source]]:
    if inputs is None:
        return
    if isinstance(inputs, Mapping):
        yield from inputs.items()
        return
    if isinstance(inputs, (str, bytes, os.PathLike)):
        raise InputRefused(str(inputs), "give a list of paths, or a mapping of names to paths, bytes or files")
    for path in inputs:
        text = os.fspath(path)
        yield (fetch.name_of(text) if fetch.is_uri(text) else os.path.basename(text)), path


def _check_name(name: str, seen: set[str]) -> None:
    if not isinstance(name, str) or not name or "/" in name or "\x00" in name or name in (".", ".."):
        raise InputRefused(str(name), "an input's name is a plain file name, without '/'")
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:  # the file system would refuse it (ENAMETOOLONG)
        raise InputRefused(name[:80] + "...", f"an input's name is at most {NAME_MAX} bytes")
    problem = values.text_problem(name, line=True)  # it is listed in the job's info, which Redis's Lua reads
    if problem is not None:
        raise InputRefused(name, f"its name is one line of text, but {problem}")
    if name in seen:
        raise InputRefused(name, "two inputs have that name")
    seen.add(name)


def _copy_in(input_dir: str, name: str, source: Source) -> None:
    try:
        fd = os.open(os.path.join(input_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise InputRefused(name, "two inputs have that name") from None
    with builtins.open(fd, "wb") as target:
        if isinstance(source, bytes):
            target.write(source)
        elif isinstance(source, (str, os.PathLike)):
            _copy_path(name, os.fspath(source), target)
        elif hasattr(source, "read"):
            _copy_stream(name, source, target)
        else:
            raise InputRefused(name, f"give a path, bytes or a binary file object, not {type(source).__name__}")


def _copy_path(name: str, path: str, target: IO[bytes]) -> None:
    try:
        with builtins.open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise InputRefused(name, f"{path} is not a regular file")
            shutil.copyfileobj(handle, target, COPY_CHUNK)
    except OSError as error:
        raise InputRefused(name, f"cannot read {path}: {error.strerror or error}") from None


def _copy_stream(name: str, source: IO[bytes], target: IO[bytes]) -> None:
    while chunk := source.read(COPY_CHUNK):
        if not isinstance(chunk, bytes):
            raise InputRefused(name, "its file object gives text: open it in binary mode ('rb')")
        target.write(chunk)


def remove_directory(directory: str) -> None:
    """Remove a job's directory, however deep (see ``moi.jobfiles.confined.tree``); never follows a link out of it.

    OSError when something in it cannot be removed (or was moved while it was); a directory
    already gone is no error.
    """
    try:
        top = os.open(directory, DIRECTORY)
    except FileNotFoundError:
        return
    try:
        for fd, _, entries in tree(top, remove=True):
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):  # a link is removed, never followed
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(top)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(directory)


# deleting ------------------------------------------------------------------------------

SWEEP_GRACE = 600.0  # seconds a directory without a job is left alone: its submit may still be storing it
def remove_directories(job_ids: Iterable[str], infos: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Remove the directories of jobs that are gone (removed from the tree); ``infos``: what they were.

    One that cannot be removed now is logged and left to the sweeper, which removes gone jobs' directories.
    """
    for job_id in job_ids:
        if is_uuid(job_id):
            try:
                remove_directory(directory_of(job_id, (infos or {}).get(job_id)))
            except PathRefused:
                pass
            except OSError as error:
                log.warning("the files of removed job %s are left to the sweeper: %s", job_id, loops.one_line(error))


def sweep(store: Store, grace: float = SWEEP_GRACE) -> builtins.list[str]:
    """Remove the directories whose job is gone (expired, or removed behind moi's back); their ids.

    A directory younger than ``grace`` seconds is kept: its job may be being submitted.
    """
    root = process.settings().jobs_root
    try:
        names = [name for name in os.listdir(root) if is_uuid(name)]
    except FileNotFoundError:
        return []
    present = {info["id"] for info in store.get_many(names)}  # one round trip for the whole root
    gone = [name for name in names if name not in present and _older_than(os.path.join(root, name), grace)]
    swept = []
    for name in gone:
        try:  # one directory that cannot be removed must not keep the others
            remove_directory(os.path.join(root, name))
        except OSError as error:
            loops.failed(store, "sweeper", f"removing the files of gone job {name}", error, log)
        else:
            swept.append(name)
    return swept


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.lstat(path).st_mtime > seconds
    except FileNotFoundError:
        return False


# reading: listing and opening, confined ----------------------------------------------


def list(job_id: str, path: str = "", recursive: bool = True) -> builtins.list[Entry]:  # noqa: A001
    """The entries under ``path`` of the job's directory, sorted by path; links are not followed (nor listed)."""
    names = _names(job_id, path)
    fd = _open_directory(job_id, names)
    try:
        entries = builtins.list(_listed(job_id, fd, "/".join(names), recursive))
    except OSError as error:  # a directory moved while it was listed
        raise PathRefused(job_id, path, error.strerror or str(error)) from None
    finally:
        os.close(fd)
    return sorted(entries, key=lambda entry: entry.path)


def open(job_id: str, path: str) -> BinaryIO:  # noqa: A001
    """A file of the job's directory, opened for reading (binary)."""
    names = _names(job_id, path)
    if not names:
        raise PathRefused(job_id, path, "it names the job directory itself, not a file in it")
    parent = _open_directory(job_id, names[:-1])
    try:
        fd = os.open(names[-1], FILE, dir_fd=parent)
    except OSError as error:
        raise _refusal(job_id, path, error) from None
    finally:
        os.close(parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PathRefused(job_id, path, "it is not a regular file")
    os.set_blocking(fd, True)
    return builtins.open(fd, "rb")


def summary(directory: str) -> dict[str, int]:
    """How many regular files the directory holds, and their total size (links not followed)."""
    count = size = 0
    top = os.open(directory, DIRECTORY)
    try:
        for _, _, entries in tree(top):
            for entry in entries:
                with contextlib.suppress(OSError):  # gone meanwhile: not counted
                    if entry.is_file(follow_symlinks=False):
                        size += entry.stat(follow_symlinks=False).st_size
                        count += 1
    finally:
        os.close(top)
    return {"count": count, "size": size}


def held(directory: str) -> dict[str, int] | None:
    """``summary`` for a job's final write, which nothing may stop: None (logged) when it cannot be counted."""
    if not directory or not os.path.isdir(directory):
        return None
    try:
        return summary(directory)
    except Exception as error:  # the job ends with its real outcome, counted or not
        log.warning("the files of %s were not counted: %s", printable(directory), loops.one_line(error))
        return None


def _names(job_id: str, path: str) -> builtins.list[str]:
    """``path`` as names inside the job directory; PathRefused for one that could leave it."""
    if "\x00" in path:
        raise PathRefused(job_id, path, "it holds a NUL byte")
    if path.startswith("/") or path.startswith("\\"):
        raise PathRefused(job_id, path, "it is absolute; give a path inside the job directory")
    names = [name for name in path.split("/") if name not in ("", ".")]
    if ".." in names:
        raise PathRefused(job_id, path, "it climbs out with '..'")
    return names


def _open_directory(job_id: str, names: builtins.list[str]) -> int:
    """A file descriptor of the directory ``names`` lead to, each opened without following links."""
    try:
        fd = os.open(current_directory(job_id), DIRECTORY)
    except OSError:
        raise NoSuchFile(job_id, "") from None
    for index, name in enumerate(names):
        try:
            inner = os.open(name, DIRECTORY, dir_fd=fd)
        except OSError as error:
            os.close(fd)
            raise _refusal(job_id, "/".join(names[: index + 1]), error) from None
        os.close(fd)
        fd = inner
    return fd


def _refusal(job_id: str, path: str, error: OSError) -> Exception:
    if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return PathRefused(job_id, path, "it goes through a symbolic link or a file")
    return NoSuchFile(job_id, path)


LIST_PATH_MAX = 4096  # characters of the longest path a listing shows (Linux's PATH_MAX): bounds its memory


def _listed(job_id: str, fd: int, prefix: str, recursive: bool) -> Iterator[Entry]:
    """The entries under the directory open at ``fd``; links are neither followed nor listed."""
    if not recursive:
        with os.scandir(fd) as scanned:
            yield from _entries(job_id, prefix, builtins.list(scanned))
        return
    for _, names, entries in tree(fd):
        yield from _entries(job_id, "/".join(filter(None, [prefix, *names])), entries)


def _entries(job_id: str, prefix: str, found: builtins.list[os.DirEntry[str]]) -> Iterator[Entry]:
    for entry in found:
        path = f"{prefix}/{entry.name}" if prefix else entry.name
        if len(path) > LIST_PATH_MAX:
            why = f"it holds paths longer than {LIST_PATH_MAX} characters; list its directories one at a time"
            raise PathRefused(job_id, prefix[:80] + "...", why)
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            yield Entry(path, True, 0)
        elif entry.is_file(follow_symlinks=False):
            yield Entry(path, False, entry.stat(follow_symlinks=False).st_size)


# on the engine -------------------------------------------------------------------------


def unseen(directory: str, label: str) -> str:
    """Why a job whose directory this engine cannot see never started."""
    return (
        f"Never started: engine {label} cannot see the job directory {directory}; with engines on "
        f"other hosts than {socket.gethostname()}, the jobs root (MOI_JOBS_DIR) must be a filesystem "
        "they all see at the same path (see the README, Job files)"
    )


def bring_in(directory: str, transfers: Mapping[str, Any]) -> None:
    """On the engine, before the call: inputs by URI into ``input/``, resources (cached) into ``resource/``,
    as the policy the submitting side wrote allows (the strict default when it wrote none)."""
    policy = input_policy.Policy.from_carried(transfers.get("policy"))
    for name, uri in transfers.get("inputs", ()):
        fetch.fetch(uri, os.path.join(directory, INPUT, name), policy)
    cache = fetch.default_cache()
    for name, uri in transfers.get("resources", ()):
        link = os.path.join(directory, RESOURCE, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)  # a relaunch, or a second try
        os.symlink(fetch.resource(uri, cache, policy), link)


def send_out(directory: str, transfers: Mapping[str, Any]) -> None:
    """On the engine, after a success: ``output/`` to the URI asked for, if any."""
    if transfers.get("outputs"):
        fetch.upload(os.path.join(directory, OUTPUT), transfers["outputs"])


@contextmanager
def job_environment(directory: str) -> Iterator[dict[str, Any]]:
    """``$INPUT``, ``$OUTPUT``, ``$TEMP`` and ``$CPU`` for the job while it runs; restored after."""
    if not directory:
        yield {}
        return
    values = {
        "INPUT": os.path.join(directory, INPUT),
        "OUTPUT": os.path.join(directory, OUTPUT),
        "TEMP": os.path.join(directory, TEMP),
        "CPU": str(cpu_share()),
    }
    if os.path.isdir(os.path.join(directory, RESOURCE)):
        values["RESOURCE"] = os.path.join(directory, RESOURCE)
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def cpu_share() -> int:
    """This host's cores divided by the engines running on it, at least 1."""
    return max(1, (os.cpu_count() or 1) // max(1, _engines_on_this_host()))


def _engines_on_this_host() -> int:
    """ipyparallel engines of this user on this host, from /proc (1 where that cannot be read)."""
    count = 0
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return 1
    for pid in pids:
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}").st_uid != os.getuid():
                continue
            with builtins.open(f"/proc/{pid}/cmdline", "rb") as handle:
                words = handle.read().split(b"\x00")
            if any(word.endswith((b"ipyparallel.engine", b"ipengine")) for word in words):
                count += 1
    return count or 1
