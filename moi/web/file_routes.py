"""A job's files over HTTP: ``GET /moi-files/<job id>/`` lists them, ``/moi-files/<job id>/<path>`` streams one.

Only the job's owner (the user whose tree holds it, by the same login the
websocket uses) may list or download; anyone else gets 404, the same as for a
job that does not exist, so nothing leaks. A path is confined as
``moi.jobfiles.reading`` confines it (Tornado has decoded any percent-encoding first). A job of a
scheduler context over SSH has its files on the cluster: they are listed and streamed from there over
SFTP (``moi.jobs.job_files``), by the same rules.
Downloads come in chunks, with ``Range`` (one range), ``HEAD``, the content
type from the name, ``?download=1`` for ``Content-Disposition: attachment``, and
a sandboxing ``Content-Security-Policy``, so an HTML output cannot run scripts
on the application's site. ``moi server`` serves these routes; an application
mounts ``FILES_ROUTE`` (with its own ``get_current_user``) beside the websocket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import os
import re
from typing import Any, BinaryIO
from urllib.parse import quote

from tornado.web import HTTPError, RequestHandler

from moi.core.errors import ClusterUnavailable, JobFilesError, MoiError, UnknownId
from moi.core.info import Status, is_uuid
from moi.core.keys import user_name_problem
from moi.core.redact import printable
from moi.jobfiles import reading
from moi.jobs import job_files
from moi.jobs.remote_files import Place
from moi.relay import bearer
from moi.relay.session_check import confirmed
from moi.relay.websocket import cookie_user, hub_for, user_group
from moi.storage.store import Store, store_for

log = logging.getLogger("moi.files")

CHUNK = 256 * 1024  # bytes read and written at a time: what a download holds in memory
# ASCII digits, and at most 18 of them: int() refuses more than 4,300 digits, and no file has 10^18 bytes
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")


class MOIFilesHandler(RequestHandler):
    """The routes of a job's files; override ``get_current_user`` with your application's login."""

    _admin = False  # the request's Bearer token is an admin's: every user's jobs' files
    _streaming = False  # the status and the first bytes of a file were sent: an error can no longer be told

    def get_current_user(self) -> Any:
        return cookie_user(self.get_signed_cookie("user"))

    async def head(self, job_id: str, path: str) -> None:
        await self.get(job_id, path, body=False)

    async def get(self, job_id: str, path: str, body: bool = True) -> None:
        try:
            self.current_user = await confirmed(self, hub_for(self.application), self.current_user)
        except MoiError:
            self._answer(503, "the job store is unavailable; try again", "unavailable")
            return
        self._admin = await bearer.authenticate(self, hub_for(self.application))
        await self.serve(job_id, await self._authorised(job_id), path, body)

    async def serve(self, job_id: str, status: str | None, path: str, body: bool) -> None:
        """The job's listing or file once the asker may see it (``status``: the job's), or 404 for anyone else."""
        if status is None:
            self._not_found(f"No files of job {printable(job_id)}")
            return
        if status in (Status.ARCHIVED, Status.EXPIRED):  # retention: the owner keeps the metadata only
            self._answer(410, f"Job {job_id} is {status.lower()}: its files are no longer served", "gone")
            return
        try:
            place = await asyncio.get_running_loop().run_in_executor(None, job_files.place_of, job_id)
            if path == "" or path.endswith("/"):
                recursive = self.get_query_argument("recursive", "1") != "0"
                entries = await job_files.work(place, job_files.list_at, place, job_id, path, recursive)
                self._listing(job_id, path, entries, body)
                return
            handle = await job_files.work(place, job_files.open_at, place, job_id, path)
        except (JobFilesError, ClusterUnavailable) as error:
            self._refused(error)
            return
        try:
            await self._send(place, handle, path, body)
        except (OSError, JobFilesError, ClusterUnavailable) as error:
            if self._streaming:  # the status is sent (the client went away, say): nothing more to tell
                log.info("download of %s stopped: %s", printable(path, 200), printable(str(error), 300))
                return
            self.clear()  # before the first byte was sent: one line instead
            self._refused(error)
        finally:
            await job_files.work(place, handle.close, bounded=False)

    def _refused(self, error: Exception) -> None:
        """404 for a file that cannot be read, 503 for a cluster out of reach: one line each."""
        if isinstance(error, ClusterUnavailable):  # the job's cluster is out of reach: its files wait there
            self._answer(503, str(error), "unavailable")
        elif isinstance(error, JobFilesError):
            self._not_found(str(error))
        else:
            self._not_found(f"the file cannot be read: {printable(getattr(error, 'strerror', None) or error, 200)}")

    async def _authorised(self, job_id: str) -> str | None:
        """The job's status when the user owns it; None for anyone else, who learns nothing (404, as for no job)."""
        user = self.current_user
        if not user:
            raise HTTPError(403, "log in first")
        if user_name_problem(str(user)) is not None:
            raise HTTPError(403, "not a user name")
        if not is_uuid(job_id):
            return None
        hub = hub_for(self.application)
        try:
            mine = await user_group(hub, str(user))
            store = store_for(hub.url, hub.keys.prefix, hub.ttl)
            owner, status = await asyncio.get_running_loop().run_in_executor(None, _owner_of, store, job_id)
        except UnknownId:
            return None
        except MoiError as error:
            raise HTTPError(503, "job store unavailable") from error
        return str(status) if owner == mine or self._admin else None

    def _listing(self, job_id: str, path: str, entries: list[reading.Entry], body: bool) -> None:
        listed = [{"path": entry.path, "is_dir": entry.is_dir, "size": entry.size} for entry in entries]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"job": job_id, "path": path, "entries": listed}) if body else None)

    async def _send(self, place: Place | None, handle: BinaryIO, path: str, body: bool) -> None:
        """The file, or the asked range of it; its first chunk is read before anything is sent, so that a file
        that cannot be read is still one line (the caller's); a failure later closes the connection."""
        size = await job_files.work(place, handle.seek, 0, os.SEEK_END)  # here or on a cluster alike
        self.set_header("Accept-Ranges", "bytes")
        asked = _range(self.request.headers.get("Range"), size)
        if asked is None:
            self.set_header("Content-Range", f"bytes */{size}")
            self._answer(416, f"the Range asked for is not one range of bytes within the file's {size}", "bad_range")
            return
        start, end = asked
        self._headers_for(path, start, end, size)
        if not body:
            self.finish()
            return
        await job_files.work(place, handle.seek, start)
        left = end - start
        chunk = await job_files.work(place, handle.read, min(CHUNK, left))
        self._streaming = True
        while chunk:
            left -= len(chunk)
            self.write(chunk)
            await self.flush()  # one chunk in memory at a time, whatever the file's size
            if left <= 0:
                break
            try:
                chunk = await job_files.work(place, handle.read, min(CHUNK, left))
            except (OSError, MoiError) as error:  # the status is sent: all that is left is to stop
                log.warning("download of %s stopped: %s", printable(path, 200), printable(str(error), 300))
                self.request.connection.close()  # type: ignore[union-attr]
                return
        self.finish()  # a file that shrank meanwhile ends short: the client sees fewer bytes than announced

    def _headers_for(self, path: str, start: int, end: int, size: int) -> None:
        if self.request.headers.get("Range"):
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.set_header("Content-Type", mimetypes.guess_type(path)[0] or "application/octet-stream")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "sandbox")
        if self.get_query_argument("download", "") == "1":
            name = quote(os.path.basename(path))
            self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{name}")
        self.set_header("Content-Length", str(end - start))

    def _not_found(self, text: str) -> None:
        self._answer(404, text, "not_found")

    def _answer(self, status: int, text: str, code: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": text, "code": code}))


def _owner_of(store: Store, job_id: str) -> tuple[str | None, str | None]:
    """The user's group at the top of the job's tree, and the job's status."""
    info = store.get(job_id)
    if info.get("type") != "job":
        return None, None
    owner = info.get("owner")
    if isinstance(owner, str):
        return owner, info.get("status")
    parent = info.get("parent")
    return (store.owner_of(parent) if isinstance(parent, str) else None), info.get("status")


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """The bytes a ``Range`` header asks for, ``[start, end)``: all without one; None when unsatisfiable."""
    if not header:
        return 0, size
    found = _RANGE.fullmatch(header.strip())
    if found is None or found.groups() == ("", ""):
        return None
    first, last = found.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size
    else:
        start, end = int(first), min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        return None
    return start, end


FILES_ROUTE = (r"/moi-files/([^/]+)/(.*)", MOIFilesHandler)
