"""Following a job's ``framework.log`` over the websocket: appended lines as they come, bounded.

``{"log": ID}`` starts following (``{"log": {"id": ID, "stop": true}}`` stops); the
server answers ``{"log": {"id", "lines", "offset"}}`` frames, and one with ``"end": true``
once the job has finished and its log was read to the end. The first frame holds at
most the last ``START`` bytes, each later one at most ``CHUNK``; a socket follows at
most ``MAX_PER_SOCKET`` logs at once. The file is read through ``moi.jobfiles.reading``, so the
rules of the job's directory (confined, no links) hold here too; the relay passes another opener for a
job whose files are on a cluster (``moi.jobs.job_files.open``: the log read over SFTP as it grows there).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from moi.core.errors import ClusterUnavailable, JobFilesError, MoiError
from moi.core.info import is_finished
from moi.jobfiles import reading
from moi.storage.store import Store

log = logging.getLogger("moi.log_tail")

LOG_NAME = "framework.log"
START = 64 * 1024  # bytes of an existing log sent first: its tail
CHUNK = 64 * 1024  # bytes sent per frame after that
INTERVAL = 0.5  # seconds between looks at the file
MAX_PER_SOCKET = 4

Opener = Callable[[str, str], BinaryIO]  # (job id, path) -> the file, opened for reading, seekable
Work = Callable[..., Awaitable[Any]]  # (func, *args) -> func(*args), run off the event loop


def read_from(job_id: str, offset: int | None, whole: bool, opener: Opener = reading.open) -> tuple[list[str], int]:
    """Complete lines of the log from ``offset`` (None: its last START bytes), CHUNK bytes at most;
    the offset after them. ``whole``: the job has ended, so a last line without a newline counts."""
    try:
        with opener(job_id, LOG_NAME) as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - START) if offset is None else min(offset, size)
            handle.seek(start)
            data = handle.read(CHUNK)
    except (JobFilesError, ClusterUnavailable):  # not written yet (made on the first line), gone, out of reach
        return [], offset or 0
    if offset is None and start > 0:  # begun mid-line: from the next one
        cut = data.find(b"\n") + 1
        start, data = start + cut, data[cut:]
    if not whole or start + len(data) < size:
        data = data[: data.rfind(b"\n") + 1]
    return data.decode("utf-8", "replace").splitlines(), start + len(data)


async def follow(
    job_id: str,
    store: Store,
    send: Callable[[dict[str, Any]], None],
    interval: float = INTERVAL,
    opener: Opener = reading.open,
    work: Work | None = None,
) -> None:
    """Send the log's lines until the job has ended and all of it was sent (read through ``opener``, off the
    event loop by ``work``: its shared executor unless told otherwise). Any failure ends it with one line."""
    loop = asyncio.get_running_loop()
    offset: int | None = None
    try:
        while True:
            ended = is_finished(await loop.run_in_executor(None, store.get, job_id))
            try:
                if work is None:
                    lines, offset = await loop.run_in_executor(None, read_from, job_id, offset, ended, opener)
                else:
                    lines, offset = await work(read_from, job_id, offset, ended, opener)
            except ClusterUnavailable:  # its pool full, or its cluster out of reach: the next tick tries again
                await asyncio.sleep(interval)
                continue
            if lines:
                send({"id": job_id, "lines": lines, "offset": offset})
                continue  # more may be waiting behind a full chunk
            if ended:
                send({"id": job_id, "lines": [], "offset": offset, "end": True})
                return
            await asyncio.sleep(interval)
    except MoiError as error:  # the job was removed, or Redis went away: say so, and stop
        send({"id": job_id, "lines": [], "offset": offset or 0, "end": True, "error": str(error)})
    except Exception as error:  # noqa: BLE001 - a task that dies says so, in one line, rather than in silence
        log.warning("following the log of job %s failed", job_id, exc_info=True)
        why = f"the log could not be read: {getattr(error, 'strerror', None) or type(error).__name__}"
        send({"id": job_id, "lines": [], "offset": offset or 0, "end": True, "error": why})
