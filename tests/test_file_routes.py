"""A job's files over HTTP, from a real Tornado server: listing, downloads (whole, Range, HEAD), the owner rule.

The session's Redis and cluster make real job directories; requests go over real HTTP to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from moi import files
from moi.core.info import new_id
from moi.job import submit
from tests import files_jobs
from tests.test_relay_security import cookie, server

WAIT = 120  # seconds: a bound on a hang, never an assertion on time


def a_job_with_files(user: str, tmp_path: Path) -> str:
    inputs = {"notes.txt": b"0123456789", "page.html": b"<script>alert(1)</script>"}
    job_id, _, handle = submit("default", user, "files", None, files_jobs.use_files, files=inputs)
    handle.get(timeout=WAIT)
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    (Path(files.directory_of(job_id)) / "output" / "link.txt").symlink_to(outside)
    return job_id


async def fetch(port: int, path: str, user: str | None = "alice", **options: Any) -> HTTPResponse:
    headers = dict(options.pop("headers", {}))
    if user is not None:
        headers["Cookie"] = f"user={cookie(user)}"
    url = f"http://127.0.0.1:{port}{path}"
    return await AsyncHTTPClient().fetch(url, headers=headers, raise_error=False, **options)


def test_the_owner_lists_and_downloads_whole_in_ranges_and_by_head(r, tmp_path: Path) -> None:
    job_id = a_job_with_files("alice", tmp_path)

    async def scenario() -> None:
        async with server() as port:
            listing = await fetch(port, f"/moi-files/{job_id}/")
            assert listing.code == 200 and listing.headers["Content-Type"] == "application/json"
            entries = json.loads(listing.body)["entries"]
            assert {"path": "input/notes.txt", "is_dir": False, "size": 10} in entries
            assert "output/link.txt" not in [entry["path"] for entry in entries]
            top = json.loads((await fetch(port, f"/moi-files/{job_id}/?recursive=0")).body)["entries"]
            assert [entry["path"] for entry in top] == ["input", "output", "tmp"]
            inside = json.loads((await fetch(port, f"/moi-files/{job_id}/output/")).body)["entries"]
            expected = ["output/deeper", "output/deeper/count.txt", "output/joined.txt"]
            assert [entry["path"] for entry in inside] == expected

            whole = await fetch(port, f"/moi-files/{job_id}/input/notes.txt")
            assert (whole.code, whole.body) == (200, b"0123456789")
            assert whole.headers["Content-Type"].startswith("text/plain")
            assert whole.headers["Accept-Ranges"] == "bytes" and "Content-Disposition" not in whole.headers
            page = await fetch(port, f"/moi-files/{job_id}/input/page.html")
            assert page.headers["Content-Security-Policy"] == "sandbox"  # its script cannot run on this site
            assert page.headers["X-Content-Type-Options"] == "nosniff"

            part = await fetch(port, f"/moi-files/{job_id}/input/notes.txt", headers={"Range": "bytes=2-5"})
            assert (part.code, part.body, part.headers["Content-Range"]) == (206, b"2345", "bytes 2-5/10")
            tail = await fetch(port, f"/moi-files/{job_id}/input/notes.txt", headers={"Range": "bytes=-3"})
            assert (tail.code, tail.body) == (206, b"789")
            past = await fetch(port, f"/moi-files/{job_id}/input/notes.txt", headers={"Range": "bytes=10-"})
            assert (past.code, past.headers["Content-Range"]) == (416, "bytes */10")

            head = await fetch(port, f"/moi-files/{job_id}/input/notes.txt", method="HEAD")
            assert (head.code, head.body, head.headers["Content-Length"]) == (200, b"", "10")
            saved = await fetch(port, f"/moi-files/{job_id}/input/notes.txt?download=1")
            assert saved.headers["Content-Disposition"] == "attachment; filename*=UTF-8''notes.txt"

    asyncio.run(scenario())


def test_another_user_an_unknown_job_and_every_traversal_get_the_same_404(r, tmp_path: Path) -> None:
    job_id = a_job_with_files("alice", tmp_path)

    async def scenario() -> None:
        async with server() as port:
            unknown = await fetch(port, f"/moi-files/{new_id()}/input/notes.txt")
            assert unknown.code == 404
            for path in (f"/moi-files/{job_id}/", f"/moi-files/{job_id}/input/notes.txt"):
                theirs = await fetch(port, path, user="mallory")
                assert theirs.code == 404 and b"0123456789" not in theirs.body and b"notes" not in theirs.body
            nobody = await fetch(port, f"/moi-files/{job_id}/input/notes.txt", user=None)
            assert nobody.code == 403
            for path in (
                "..%2F..%2F..%2Fetc%2Fpasswd",
                "%2e%2e/%2e%2e/etc/passwd",
                "input/..%2F..%2F" + job_id + "%2Finput%2Fnotes.txt",
                "%2Fetc%2Fpasswd",
                "input/notes.txt%00",
                "output/link.txt",
                "not-a-file",
            ):
                refused = await fetch(port, f"/moi-files/{job_id}/{path}")
                assert refused.code == 404, path
                assert b"outside" not in refused.body and b"root:" not in refused.body
            assert (await fetch(port, "/moi-files/not-a-job/x")).code == 404

    asyncio.run(scenario())
