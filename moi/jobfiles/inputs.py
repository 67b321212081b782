"""Placing a job's inputs at submit time: its directory made, local inputs copied in, URIs checked.

Inputs and resources given by URI are only checked here (``moi.jobfiles.input_policy``);
the engine fetches them before the call (``moi.jobfiles.on_engine``). An input refused
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

from moi.core import values
from moi.core.errors import InputRefused, MoiError
from moi.jobfiles import input_policy, uri_transfers
from moi.jobfiles.directory import INPUT, OUTPUT, RESOURCE, TEMP, directory_of
from moi.jobfiles.removal import remove_directory
from moi.storage import process

COPY_CHUNK = 1 << 20
NAME_MAX = 255  # bytes of one file name on Linux's file systems

Source = str | os.PathLike[str] | bytes | IO[bytes]
Inputs = Sequence[str | os.PathLike[str]] | Mapping[str, Source]


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
    named = list(_named(inputs))
    fetches = bool(resources) or any(isinstance(source, str) and uri_transfers.is_uri(source) for _, source in named)
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
) -> list[list[str]]:
    """Copy the local inputs into ``input_dir``; the ``[name, uri]`` of those the engine fetches."""
    fetched = []
    seen: set[str] = set()
    for name, source in named:
        _check_name(name, seen)
        if isinstance(source, str) and uri_transfers.is_uri(source):
            policy.check_uri(name, source, origin)  # refused now; checked again where it is fetched
            fetched.append([name, source])  # fetched on the engine, where it runs
        elif origin != input_policy.LOCAL and isinstance(source, (str, os.PathLike)):
            with open(policy.open_in_roots(name, os.fspath(source)), "rb") as granted:
                _copy_in(input_dir, name, granted)
        else:
            _copy_in(input_dir, name, source)
    return fetched


def _resources(resources: Mapping[str, str], policy: input_policy.Policy, origin: str) -> list[list[str]]:
    """The ``[name, uri]`` of each resource, checked as the policy says (fetched on the engine)."""
    checked = []
    for name, uri in resources.items():
        _check_name(name, set())
        if not isinstance(uri, str) or not uri_transfers.is_uri(uri):
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
        yield (uri_transfers.name_of(text) if uri_transfers.is_uri(text) else os.path.basename(text)), path


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
    with open(fd, "wb") as target:
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
        with open(path, "rb") as handle:
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
