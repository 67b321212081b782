"""Job files: a 1 GiB output streamed to a client, 10,000 files listed, 1,000 jobs submitted with an input.

The download goes through moi's file routes in their own server process
(``benchmarks.wsserver files``), read by a client that throws the bytes away;
the server's resident memory is sampled all along, and its growth is the
figure (the bar: under 32 MiB). Listing is timed in process (``moi.files.list``,
with its peak Python memory) and over HTTP. Submitting compares 1,000 trivial
jobs with one small input each against the same jobs without.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
import urllib.request
from typing import Any

import psutil
from tornado.web import create_signed_value

from benchmarks.live import SECRET, start_server
from benchmarks.services import Services
from benchmarks.stats import Figure
from benchmarks.tasks import trivial

USER = "bench-files"
GIB = 1 << 30
MIB = 1 << 20
LISTED = 10_000
TIMEOUT = 300.0


def measure(plan: Any, services: Services) -> tuple[str, list[Figure]]:
    from moi import files, job

    port, server = start_server(services, "files", env={"MOI_JOBS_DIR": files_root(services)})
    big = _job_with(lambda directory: _write_big(os.path.join(directory, "output", "big.bin")))
    many = _job_with(lambda directory: _write_many(os.path.join(directory, "output")))
    cookie = create_signed_value(SECRET, "user", USER).decode()
    speed, growth = (
        Figure("download of a 1 GiB output, through the server", "MB/s"),
        Figure("server resident memory growth during that download (bar < 32)", "MiB"),
    )
    listing, listing_memory, listing_http = (
        Figure(f"listing {LISTED:,} files, moi.files.list", "ms"),
        Figure(f"listing {LISTED:,} files, peak Python memory", "MiB"),
        Figure(f"listing {LISTED:,} files over HTTP (JSON)", "ms"),
    )
    with_input, without = (
        Figure("submit, 1000 jobs with one small input each", "jobs/s"),
        Figure("submit, the same 1000 jobs without inputs", "jobs/s"),
    )
    for _ in range(plan.runs):
        seconds, peak = _download(port, cookie, big, server)
        speed.add(GIB / MIB / seconds)
        growth.add(peak / MIB)
        start = time.perf_counter()
        assert len(files.list(many)) > LISTED
        listing.add((time.perf_counter() - start) * 1000)
        tracemalloc.start()  # apart: tracing slows the listing it measures
        files.list(many)
        listing_memory.add(tracemalloc.get_traced_memory()[1] / MIB)
        tracemalloc.stop()
        start = time.perf_counter()
        _get(port, cookie, f"/moi-files/{many}/")
        listing_http.add((time.perf_counter() - start) * 1000)
        without.add(_submit_rate(job, None))
        with_input.add(_submit_rate(job, {"in.txt": b"a small input\n"}))
    return "Job files", [speed, growth, listing, listing_memory, listing_http, with_input, without]


def files_root(services: Services) -> str:
    import moi

    root = str(services.directory / "jobs")
    moi.configure(jobs_dir=root)
    return root


def _job_with(fill: Any) -> str:
    from moi import files, job

    job_id, _, handle = job.submit(None, USER, "files", None, trivial, workdir=True)
    handle.get(TIMEOUT)
    fill(files.directory_of(job_id))
    return job_id


def _write_big(path: str) -> None:
    block = os.urandom(MIB)
    with open(path, "wb") as handle:
        for _ in range(GIB // MIB):
            handle.write(block)


def _write_many(output: str) -> None:
    for folder in range(100):
        inner = os.path.join(output, f"part-{folder:03d}")
        os.mkdir(inner)
        for index in range(LISTED // 100):
            with open(os.path.join(inner, f"file-{index:04d}.txt"), "wb") as handle:
                handle.write(b"x")


def _get(port: int, cookie: str, path: str) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Cookie": f"user={cookie}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        return bytes(answer.read())


def _download(port: int, cookie: str, job_id: str, server: psutil.Process) -> tuple[float, int]:
    """Seconds to read the whole file, and the server's peak resident growth over it (bytes)."""
    before = server.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            done.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/moi-files/{job_id}/output/big.bin", headers={"Cookie": f"user={cookie}"}
    )
    start = time.perf_counter()
    received = 0
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        while chunk := answer.read(MIB):
            received += len(chunk)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if received != GIB:
        raise RuntimeError(f"downloaded {received} bytes of {GIB}")
    return seconds, peak[0] - before


def _submit_rate(job: Any, inputs: dict[str, bytes] | None) -> float:
    start = time.perf_counter()
    handles = [job.submit(None, USER, "input", None, trivial, files=inputs)[2] for _ in range(1000)]
    for handle in handles:
        handle.get(TIMEOUT)
    return 1000 / (time.perf_counter() - start)
