"""Where a scheduler's commands run and its job directories live: this machine, or a login node over SSH.

A ``Runner`` runs one command there (an argv, never a shell line built from user text) and reads and
writes files there. ``LocalRunner`` is this machine; ``moi.compute.schedulers.ssh_runner.SshRunner`` is a
login node reached over SSH (commands) and SFTP (files), which shares no filesystem with moi. Every method
raises ``SchedulerUnavailable`` (one line: the host, and why) when the place cannot be reached at all; a
command that runs and fails is a ``Ran`` with its return code, not an exception.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from moi.core.errors import SchedulerUnavailable
from moi.jobfiles.by_descriptor import DIRECTORY, FILE

COMMAND_TIMEOUT = 60.0  # seconds one scheduler command may take (sbatch, squeue ...)


@dataclass(frozen=True)
class Ran:
    """A command's end: its return code and its output, decoded (undecodable bytes replaced)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def problem(self) -> str:
        """The command's own complaint, on one line: the last line of stderr, else of stdout."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1][:500]
        return f"exit code {self.returncode}"


@dataclass(frozen=True)
class Entry:
    """A file under a job directory: its path relative to that directory, size and modification time."""

    path: str
    size: int
    mtime: float


class OpenedFile(Protocol):
    """A file opened there for reading, by its handle: later reads read the same file, whatever is renamed."""

    size: int  # its size when it was opened

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (b"" past its end); OSError, SchedulerUnavailable."""
        ...

    def close(self) -> None: ...


class Runner(Protocol):
    """A place where a scheduler's commands run and its job directories live."""

    @property
    def where(self) -> str:
        """The place for a person: ``this machine`` or ``alice@login:22``."""
        ...

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout: float = COMMAND_TIMEOUT) -> Ran:
        """Run a command there; SchedulerUnavailable when the place cannot be reached, or the program is missing."""
        ...

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write a file there (its parent directories made, 0o700); SchedulerUnavailable, OSError."""
        ...

    def read_file(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of a file there (``length`` None: to its end); FileNotFoundError when it is not there."""
        ...

    def list_files(self, directory: str) -> list[Entry]:
        """Every regular file under ``directory`` there, recursively, symlinks not followed; [] when it is gone."""
        ...

    def open_file(self, directory: str, names: list[str]) -> OpenedFile:
        """``directory/names...`` opened for reading, no link followed on the way from ``directory``
        (PermissionError for one); FileNotFoundError when it is not there."""
        ...

    def make_dirs(self, path: str) -> None:
        """A directory there, with its parents (0o700: a job's inputs and call are its owner's); OSError."""
        ...

    def close(self) -> None:
        """Let go of any connection (the next use connects again)."""
        ...


class LocalRunner:
    """This machine: commands through ``subprocess``, files on its filesystem."""

    where = "this machine"

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout: float = COMMAND_TIMEOUT) -> Ran:
        try:
            given = stdin.encode() if stdin is not None else None  # bytes: the output is decoded leniently
            done = subprocess.run(
                list(argv), input=given, capture_output=True, timeout=timeout, check=False, env=without_moi_settings()
            )
        except FileNotFoundError:
            raise SchedulerUnavailable(f"{argv[0]} is not installed on {self.where}") from None
        except subprocess.TimeoutExpired:
            raise SchedulerUnavailable(f"{argv[0]} did not answer within {timeout:g}s on {self.where}") from None
        except OSError as error:  # an argument list past the kernel's limit, a program that cannot run ...
            raise SchedulerUnavailable(f"{argv[0]} cannot run on {self.where}: {error.strerror or error}") from None
        return Ran(done.returncode, _text(done.stdout), _text(done.stderr))

    # A job's directory is written by the job's own code: what moi reads of it is opened without following a
    # link the job left there (open_file: no component below the directory; read_file: the file itself).

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        parent = os.path.dirname(path)
        if parent:  # a bare name is in the current directory
            self.make_dirs(parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        fd = os.open(path, flags, mode)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, mode)  # as asked, whatever the umask or the mode of the file it replaces
            out.write(data)

    def read_file(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as source:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermissionError(f"{path} is not a regular file")
            source.seek(offset)
            return source.read() if length is None else source.read(length)

    def list_files(self, directory: str) -> list[Entry]:
        found = []
        for root, dirs, files in os.walk(directory):
            dirs[:] = [name for name in dirs if not os.path.islink(os.path.join(root, name))]
            for name in files:
                path = os.path.join(root, name)
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode):
                    found.append(Entry(os.path.relpath(path, directory), info.st_size, info.st_mtime))
        return sorted(found, key=lambda entry: entry.path)

    def open_file(self, directory: str, names: list[str]) -> OpenedFile:
        fd = os.open(directory, DIRECTORY)
        try:
            for name in names[:-1]:
                inner = os.open(name, DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = inner
            opened = os.open(names[-1], FILE, dir_fd=fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(opened).st_mode):
            os.close(opened)
            raise PermissionError(errno.EACCES, "not a regular file", names[-1])
        return _LocalFile(opened)

    def make_dirs(self, path: str) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)

    def close(self) -> None:
        pass


class _LocalFile:
    def __init__(self, fd: int) -> None:
        self.fd, self.size = fd, os.fstat(fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        os.close(self.fd)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def without_moi_settings() -> dict[str, str]:
    """This process's environment without moi's own settings (MOI_REDIS_URL and its password, MOI_CONFIG_FP ...):
    sbatch and qsub -V hand a job the environment they run in, and a job runs without moi's credentials (nor the
    paths an engine set for the job it runs, when a poller runs in an engine)."""
    return {name: value for name, value in os.environ.items() if not _not_passed_on(name)}


# Set by an engine for the job it runs (moi.jobfiles.on_engine): a poller in that engine must not hand them on.
_THE_RUNNING_JOBS = frozenset(("INPUT", "OUTPUT", "TEMP", "RESOURCE", "CPU", "MOI_JOB_ID"))


def _not_passed_on(name: str) -> bool:
    return name.startswith("MOI_") or name in _THE_RUNNING_JOBS
