"""A job's directory on the engine: what is fetched brought in, the job's environment, output sent out.

The submitting side wrote what to move (``moi.jobfiles.inputs.prepare``'s transfers) and the
policy that allows it; the engine may be on another host, which must see the jobs root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from moi.core.redact import printable
from moi.jobfiles import input_policy, uri_transfers
from moi.jobfiles.directory import INPUT, OUTPUT, RESOURCE, TEMP
from moi.jobfiles.reading import summary
from moi.storage import loops

log = logging.getLogger("moi.files")


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
        uri_transfers.fetch(uri, os.path.join(directory, INPUT, name), policy)
    cache = uri_transfers.default_cache()
    for name, uri in transfers.get("resources", ()):
        link = os.path.join(directory, RESOURCE, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)  # a relaunch, or a second try
        os.symlink(uri_transfers.resource(uri, cache, policy), link)


def send_out(directory: str, transfers: Mapping[str, Any]) -> None:
    """On the engine, after a success: ``output/`` to the URI asked for, if any."""
    if transfers.get("outputs"):
        uri_transfers.upload(os.path.join(directory, OUTPUT), transfers["outputs"])


def held(directory: str) -> dict[str, int] | None:
    """``summary`` for a job's final write, which nothing may stop: None (logged) when it cannot be counted."""
    if not directory or not os.path.isdir(directory):
        return None
    try:
        return summary(directory)
    except Exception as error:  # the job ends with its real outcome, counted or not
        log.warning("the files of %s were not counted: %s", printable(directory), loops.one_line(error))
        return None


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
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                words = handle.read().split(b"\x00")
            if any(word.endswith((b"ipyparallel.engine", b"ipengine")) for word in words):
                count += 1
    return count or 1
