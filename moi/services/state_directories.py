"""Per-state directories: a service may keep a job's directory under a root per state, as saliweb does.

``Service.directories`` names a root for any of incoming, preprocessing, running,
postprocessing, completed and archived; each defaults to the one before it
(incoming to the jobs root). The roots are resolved at submit and kept in the
job's info (``directories``), so an engine needs no configuration to follow
them. When the job enters a state whose root differs, its directory moves
there (a rename, or a copy then a removal across filesystems) and its info's
``directory`` says where it now is; listing and downloads follow it. A move
that fails raises MoveFailed, which fails the job, with the data left where it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Mapping
from typing import Any

from moi.compute import attempts
from moi.core.errors import MoveFailed
from moi.core.info import Info, Status
from moi.jobfiles.removal import remove_directory
from moi.services.definition import STATES
from moi.storage.store import Store, set_fields

# a status -> the state whose root its directory lives under
ROOT_OF: dict[str, str] = {
    Status.QUEUED: "incoming",
    Status.PREPROCESSING: "preprocessing",
    Status.RUNNING: "running",
    Status.POSTPROCESSING: "postprocessing",
    Status.SUCCESS: "completed",
    Status.ARCHIVED: "archived",
}


def resolved(directories: Mapping[str, str], jobs_root: str) -> dict[str, str]:
    """Every state's root, each defaulting to the one before it; incoming to the jobs root."""
    roots: dict[str, str] = {}
    previous = jobs_root
    for state in STATES:
        previous = os.path.abspath(os.path.expanduser(directories.get(state) or previous))
        roots[state] = previous
    return roots


def move_for(store: Store, info: Info, status: str, current: str) -> str:
    """The job's directory moved under the root of ``status`` if that is not where it is; its new path."""
    roots = info.get("directories")
    if not isinstance(roots, dict) or status not in ROOT_OF or not roots.get(ROOT_OF[status]):
        return current
    target = os.path.join(str(roots[ROOT_OF[status]]), info["id"])
    if os.path.normpath(target) == os.path.normpath(current):
        return current
    _move(current, target)
    store.update(info["id"], attempts.guarded(set_fields(directory=target), info["id"], info.get("attempt")))
    return target


def _move(source: str, target: str) -> None:
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        os.rename(source, target)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise _refused(target, error) from None
    try:  # another filesystem: copy, and remove the source only once the copy is whole
        shutil.copytree(source, target, symlinks=True)
    except (OSError, RecursionError) as error:  # RecursionError: copytree recurses, and a job's tree may be deep
        with contextlib.suppress(OSError):
            remove_directory(target)
        raise _refused(target, error) from None
    with contextlib.suppress(OSError):
        remove_directory(source)


def _refused(target: str, error: OSError | RecursionError) -> MoveFailed:
    deep = "its directories are nested too deep to copy"
    why = (error.strerror if isinstance(error, OSError) else deep) or str(error)
    return MoveFailed(
        f"the job directory could not be moved to {os.path.dirname(target)}: {why}; it was left where it was"
    )


def follow(directory: str) -> dict[str, Any]:
    """This process's working directory and job environment, after its directory moved to ``directory``."""
    os.chdir(directory)
    values = {
        name: os.path.join(directory, folder)
        for name, folder in (("INPUT", "input"), ("OUTPUT", "output"), ("TEMP", "tmp"))
    }
    os.environ.update(values)
    return values
