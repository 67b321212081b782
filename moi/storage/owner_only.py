"""Files and directories only their owner may touch: moi's state directory and what it keeps there.

Anything another user owns or can write is refused (UnsafeStateDir), never
trusted: what it says would be theirs to say.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from moi.core.errors import UnsafeStateDir


def make_private_dir(path: Path) -> None:
    """Create ``path`` (0700) if missing; tighten it to 0700 if it is ours; refuse it if it is not."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(path)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)  # made by an older moi under the default umask


def check_private(path: Path, status: os.stat_result | None = None) -> None:
    """Refuse a file or directory that another user owns or that others can write."""
    status = status or os.lstat(path)
    if stat.S_ISLNK(status.st_mode):
        raise UnsafeStateDir(f"{path} is a symbolic link; moi keeps its state only in a real directory of yours")
    if status.st_uid != os.geteuid():
        raise UnsafeStateDir(
            f"{path} belongs to uid {status.st_uid}, not to you (uid {os.geteuid()}); "
            "moi will not trust it: set MOI_STATE_DIR to a directory of your own"
        )
    if status.st_mode & 0o022:
        raise UnsafeStateDir(
            f"{path} can be written by other users (mode {stat.S_IMODE(status.st_mode):o}); "
            f"moi will not trust it: chmod go-w {path}, or remove it"
        )


def private_file(path: Path, mode: str = "w") -> Any:
    """Open a file that only its owner can read (created 0600; an existing one is tightened)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)
