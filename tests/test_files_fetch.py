"""Job files by URI: inputs fetched on the engine (file://, http://, and fsspec), resources fetched once per
host, outputs sent out after a success. A real HTTP server on 127.0.0.1 counts what is fetched; the
configuration grants it, the test's directory as an input root, and two fsspec schemes (moi.jobfiles.input_policy)."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moi.core.info import Status, new_id
from moi.job import get_info, submit
from moi.jobs import connections
from tests import files_jobs
from tests.conftest import finished

WAIT = 120  # seconds: a bound on a hang, never an assertion on time


class Served:
    def __init__(self, root: Path, port: int, fetched: Counter[str]) -> None:
        self.root, self.port, self.fetched = root, port, fetched

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    root = tmp_path / "served"
    root.mkdir()
    fetched: Counter[str] = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            fetched[self.path] += 1
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MOI_FETCH_ALLOW", f"127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("MOI_INPUT_ROOTS", str(tmp_path))
    monkeypatch.setenv("MOI_URI_SCHEMES", "https, http, local, s3x")
    connections.reset()
    yield Served(root, server.server_address[1], fetched)
    connections.reset()
    server.shutdown()
    server.server_close()


def test_inputs_by_uri_are_fetched_on_the_engine(r, served: Served, tmp_path: Path) -> None:
    (served.root / "over-http.txt").write_text("http ")
    (tmp_path / "local.txt").write_text("file ")
    (tmp_path / "via-fsspec.txt").write_text("fsspec")
    inputs = {
        "a.txt": served.url("over-http.txt"),
        "b.txt": (tmp_path / "local.txt").as_uri(),
        "c.txt": "local://" + str(tmp_path / "via-fsspec.txt"),  # any scheme but file and http: through fsspec
    }
    job_id, _, handle = submit("default", "fetcher", "by uri", None, files_jobs.read_inputs_and_resource, files=inputs)
    assert handle.get(timeout=WAIT) == {"a.txt": "http ", "b.txt": "file ", "c.txt": "fsspec"}
    assert get_info(job_id)["files"]["count"] == 4  # the three fetched, and the result
    assert served.fetched["/over-http.txt"] == 1


def test_a_fetch_that_fails_fails_the_job_with_the_uri_and_the_reason(r, served: Served) -> None:
    missing = served.url("missing.txt")
    job_id, _, _ = submit("default", "fetcher", "missing", None, files_jobs.read_inputs_and_resource, files=[missing])
    info = finished(job_id, timeout=WAIT)
    assert info["status"] == Status.FAILED and info["result_format"] == "text"
    assert info["result"] == f"{missing} could not be fetched or written: HTTP 404 File not found"
    nowhere = "s3x:///bucket/none.txt"  # no host: any named host is checked (and this one does not resolve)
    job_id, _, _ = submit("default", "fetcher", "nowhere", None, files_jobs.read_inputs_and_resource, files=[nowhere])
    failed = finished(job_id, timeout=WAIT)["result"]
    assert "/bucket/none.txt could not be fetched or written: " in failed and "\n" not in failed


def test_a_resource_is_fetched_once_for_ten_jobs_on_one_host_and_gunzipped(r, served: Served) -> None:
    name = f"db-{new_id()}.txt.gz"  # a URI no earlier run has cached on this host
    (served.root / name).write_bytes(gzip.compress(b"the reference"))
    resources = {"db.txt": served.url(name) + "|gunzip"}

    handles = [
        submit("default", "fetcher", f"uses db {n}", None, files_jobs.read_inputs_and_resource, resources=resources)[2]
        for n in range(10)
    ]
    for handle in handles:
        assert handle.get(timeout=WAIT) == {"resource/db.txt": "the reference"}
    assert served.fetched[f"/{name}"] == 1


def test_outputs_are_sent_out_after_a_success(r, tmp_path: Path) -> None:
    for target in ((tmp_path / "sent").as_uri(), "local://" + str(tmp_path / "via-fsspec")):
        _, _, handle = submit(
            "default", "fetcher", "sends", None, files_jobs.read_inputs_and_resource, workdir=True, outputs=target
        )
        assert handle.get(timeout=WAIT) == {}
    assert (tmp_path / "sent" / "result.txt").read_text() == "done"
    assert (tmp_path / "via-fsspec" / "result.txt").read_text() == "done"
