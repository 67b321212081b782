"""A Python client of moi's HTTP API, for scripts on other machines.

    from moi.client import Client

    moi = Client("http://jobs.example.org:8888", token)      # `moi token create --user alice`
    job_id = moi.submit(cmd="return 6 * 7")
    info = moi.wait(job_id, timeout=600)                     # follows the websocket
    for job in moi.list(status="Failed"): ...

Built on httpx (a maintained, typed HTTP client with timeouts on every call and a
connection pool; requests has no typed API and no HTTP/2) and, for ``wait``, Tornado's
websocket client (already a moi dependency). Every call takes ``timeout``. Connection
errors and 502/503/504 are retried with backoff (``retries`` times), so a script rides
over a server restart; a 4xx answer never is: it raises ``ClientError`` at once.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from moi.core.errors import MoiError
from moi.core.info import is_finished

__all__ = ["Client", "ClientError"]

RETRIED = (502, 503, 504)


class ClientError(MoiError):
    """The server refused a request (4xx), or could not be reached within the retries."""

    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(f"{text} (HTTP {status}, {code})" if status else text)
        self.status, self.code = status, code


class Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0, retries: int = 5, backoff: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # jobs ----------------------------------------------------------------------------------

    def submit(
        self,
        cmd: str | None = None,
        cmd_type: str = "python",
        service: str | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        **fields: Any,
    ) -> str:
        """A new job: ``cmd`` (Python code, or a shell command with ``cmd_type="system"``) or a
        ``service`` with ``params``; ``fields``: name, url, priority, email, group, and the job's time limit
        and retries (time_limit, soft_time_limit, retries, retry_on, backoff, idempotent). Its id."""
        body: dict[str, Any] = {"service": service, "params": params or {}} if service else {"cmd": cmd}
        if not service:
            body["cmd_type"] = cmd_type
        body.update({name: value for name, value in fields.items() if value is not None})
        return str(self._json("POST", "/api/v1/jobs", json=body, timeout=timeout)["id"])

    def get(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v1/jobs/{job_id}", timeout=timeout))

    def cancel(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        return dict(self._json("POST", f"/api/v1/jobs/{job_id}/cancel", timeout=timeout))

    def relaunch(self, job_id: str, timeout: float | None = None) -> str:
        return str(self._json("POST", f"/api/v1/jobs/{job_id}/relaunch", timeout=timeout)["id"])

    def list(self, timeout: float | None = None, **filters: Any) -> Iterator[dict[str, Any]]:  # noqa: A003
        """Every job that matches (status, service, group, since, until, q), newest first, page by page."""
        query = {name: value for name, value in filters.items() if value is not None}
        while True:
            page = self._json("GET", "/api/v1/jobs", params=query, timeout=timeout)
            yield from page["jobs"]
            if page["next"] is None:
                return
            query["cursor"] = page["next"]

    def files(self, job_id: str, path: str = "", timeout: float | None = None) -> builtins.list[dict[str, Any]]:
        return builtins.list(self._json("GET", f"/api/v1/jobs/{job_id}/files/{path}", timeout=timeout)["entries"])

    def download(self, job_id: str, path: str, target: str, timeout: float | None = None) -> None:
        """One of a job's files, streamed to ``target``."""
        answer = self._request("GET", f"/api/v1/jobs/{job_id}/files/{path}", timeout=timeout, stream=True)
        try:
            with open(target, "wb") as out:
                for chunk in answer.iter_bytes(1 << 20):
                    out.write(chunk)
        finally:
            answer.close()

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> dict[str, Any]:
        """The job once it has finished, following its changes over the websocket (reconnecting when
        the server restarts); by polling only when the websocket is refused. ClientError at ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        info = self.get(job_id, timeout=timeout)
        while not is_finished(info):
            followed = asyncio.run(self._follow(job_id, deadline))
            if followed is not None:
                info = followed
                continue
            self._check(deadline, job_id)
            time.sleep(poll)  # refused, or no websocket: poll
            info = self.get(job_id, timeout=timeout)
        return info

    # internals ------------------------------------------------------------------------------

    async def _follow(self, job_id: str, deadline: float | None) -> dict[str, Any] | None:
        """The job's info when the socket saw it finish; None when the socket was refused or dropped."""
        parts = urlsplit(self.url)
        url = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, "/moi-ws/", "", ""))
        try:
            socket = await websocket_connect(HTTPRequest(url, headers=self._headers, request_timeout=self.timeout))
        except (HTTPClientError, OSError):
            return None
        try:
            socket.write_message(json.dumps({"get": [job_id]}))
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                frame = await asyncio.wait_for(socket.read_message(), left)
                if frame is None:
                    return None  # the server went away: look again, and reconnect
                for info in json.loads(frame).values():
                    if isinstance(info, dict) and info.get("id") == job_id and is_finished(info):
                        return info
        except TimeoutError:
            raise ClientError(0, "timeout", f"job {job_id} did not finish in time") from None
        finally:
            socket.close()

    def _check(self, deadline: float | None, job_id: str) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise ClientError(0, "timeout", f"job {job_id} did not finish in time")

    def _json(self, method: str, path: str, **options: Any) -> Any:
        return self._request(method, path, **options).json()

    def _request(
        self, method: str, path: str, timeout: float | None = None, stream: bool = False, **options: Any
    ) -> httpx.Response:
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                request = self._http.build_request(method, path, timeout=timeout or self.timeout, **options)
                answer = self._http.send(request, stream=stream)
            except httpx.TransportError as error:  # refused, reset, timed out: the server may be restarting
                last = f"{type(error).__name__}: {error}"
                continue
            if answer.status_code in RETRIED:
                last = f"HTTP {answer.status_code}"
                answer.close()
                continue
            if answer.status_code >= 400:
                raise _refusal(answer)
            return answer
        raise ClientError(0, "unreachable", f"{self.url} did not answer after {self.retries + 1} tries ({last})")


def _refusal(answer: httpx.Response) -> ClientError:
    answer.read()
    try:
        body = answer.json()
        return ClientError(answer.status_code, str(body["code"]), str(body["error"]))
    except (ValueError, KeyError, TypeError):
        return ClientError(answer.status_code, "error", answer.text[:200] or answer.reason_phrase)
