"""The HTTP API and the dashboard (``--only api``), against a real ``moi server`` process.

- ``GET /api/v1/jobs?limit=50`` with 100,000 jobs stored in the user's tree:
  each request timed alone, over one kept-alive connection; p50 and p99 of the
  newest page, of a page from the middle of the index (a cursor), and of a
  filtered page (``status=Success``).
- ``POST /api/v1/jobs`` throughput: trivial ``cmd`` jobs posted one after
  another, and by 8 clients at once.
- The dashboard's first paint with 5,000 jobs in the user's tree, in headless
  Chromium: the browser's first contentful paint, and the time until the table
  counts all 5,000 (every job's state has arrived over the websocket and the
  visible rows are drawn). Skipped, with a line, where Chromium is missing.

The 100,000 jobs are real ones: ``submit_many`` rounds of 10,000 that the
cluster runs before anything is timed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import httpx

from benchmarks.services import Services, wait_until
from benchmarks.stats import Figure, percentile
from benchmarks.tasks import trivial

STORED = 100_000
ROUND = 10_000  # jobs per submit_many while filling
DASHBOARD_JOBS = 5_000
LATENCY_SAMPLES = 300
POSTS = 500
CONCURRENT = 8
CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 600.0


def measure(plan: Any, services: Services) -> tuple[str, list[Figure]]:
    from moi.jobs import connections
    from moi.storage import tokens

    port = start_moi_server(services)
    token = tokens.create(connections.store(), "bench-api", code=True)  # it posts cmd jobs
    stored = STORED if plan.runs > 2 else STORED // 10  # --quick: 10,000
    fill("bench-api", stored)
    url = f"http://127.0.0.1:{port}"
    figures = _listing(plan, url, token, stored) + _posting(plan, url, token)
    fill("bench-dash", DASHBOARD_JOBS)
    figures += _first_paint(plan, url)
    return "HTTP API and dashboard", figures


def start_moi_server(services: Services, env: dict[str, str] | None = None, name: str = "moi-server") -> int:
    """``moi server`` as an operator starts it, on the run's Redis and cluster (or as ``env`` says)."""
    port = services.free_port()
    env = env or {
        "MOI_REDIS_URL": services.redis_url,
        "MOI_CONTEXTS": f"bench={services.url_file}",
        "MOI_DEFAULT_CONTEXT": "bench",
        "MOI_STATE_DIR": str(services.directory / "state"),
        # cmd jobs over the API run sandboxed (moi.compute.sandbox): as these uids, in a Python every uid may run
        "MOI_CODE_UIDS": "200000-265535",
        "MOI_CODE_PYTHON": "/usr/bin/python3",
    }
    proc = services.start_process(name, [sys.executable, "-m", "moi", "server", "--port", str(port)], env)
    wait_until(lambda: _answers(port) or proc.poll() is not None, 60, name)
    if proc.poll() is not None:
        raise RuntimeError(f"{name} exited; see {services.directory}/{name}.log")
    return port


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def fill(user: str, count: int) -> None:
    """``count`` finished jobs in ``user``'s tree, run by the cluster."""
    from moi.jobs.batch import submit_many

    for start in range(0, count, ROUND):
        size = min(ROUND, count - start)
        _, _, batch = submit_many("bench", user, "bulk", None, trivial, range(start, start + size))
        if not batch.wait(timeout=TIMEOUT):
            raise RuntimeError(f"{size} jobs of {user} did not finish within {TIMEOUT:.0f} s")


def _listing(plan: Any, url: str, token: str, stored: int) -> list[Figure]:
    shown = f"{stored:,}"
    newest = (Figure(f"GET /jobs?limit=50, {shown} stored, p50", "ms"), Figure("the same, p99", "ms"))
    middle = (Figure("GET /jobs?limit=50&cursor= (the middle), p50", "ms"), Figure("the same, p99", "ms"))
    filtered = (Figure("GET /jobs?limit=50&status=Success, p50", "ms"), Figure("the same, p99", "ms"))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        first = client.get("/api/v1/jobs", params={"limit": 50}).raise_for_status().json()
        assert len(first["jobs"]) == 50, first
        half = {"limit": 50, "cursor": first["next"] // 2}
        for _ in range(plan.runs):
            for (p50, p99), params in (
                (newest, {"limit": 50}),
                (middle, half),
                (filtered, {"limit": 50, "status": "Success"}),
            ):
                samples = _timed_gets(client, params)
                p50.add(percentile(samples, 0.5))
                p99.add(percentile(samples, 0.99))
    return [*newest, *middle, *filtered]


def _timed_gets(client: httpx.Client, params: dict[str, Any]) -> list[float]:
    samples = []
    for _ in range(LATENCY_SAMPLES):
        start = time.perf_counter()
        answer = client.get("/api/v1/jobs", params=params)
        samples.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200 and len(answer.json()["jobs"]) == 50, answer.text
    return samples


def _posting(plan: Any, url: str, token: str) -> list[Figure]:
    one, many = (
        Figure(f"POST /jobs, {POSTS} one after another", "jobs/s"),
        Figure(f"POST /jobs, {POSTS} from {CONCURRENT} clients at once", "jobs/s"),
    )
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(plan.runs):
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            start = time.perf_counter()
            for _ in range(POSTS):
                assert client.post("/api/v1/jobs", json={"cmd": "return 1"}).status_code == 201
            one.add(POSTS / (time.perf_counter() - start))
        many.add(asyncio.run(_post_at_once(url, headers)))
    return [one, many]


async def _post_at_once(url: str, headers: dict[str, str]) -> float:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

        async def poster(count: int) -> None:
            for _ in range(count):
                answer = await client.post("/api/v1/jobs", json={"cmd": "return 1"})
                assert answer.status_code == 201, answer.text

        start = time.perf_counter()
        await asyncio.gather(*(poster(POSTS // CONCURRENT) for _ in range(CONCURRENT)))
        return (POSTS // CONCURRENT) * CONCURRENT / (time.perf_counter() - start)


def _first_paint(plan: Any, url: str) -> list[Figure]:
    paint, table = (
        Figure(f"dashboard with {DASHBOARD_JOBS:,} jobs, first contentful paint", "ms"),
        Figure(f"dashboard with {DASHBOARD_JOBS:,} jobs, until all {DASHBOARD_JOBS:,} are in the table", "ms"),
    )
    if not have_chromium():
        print(f"api: {CHROMIUM} is missing (apt-get install -y chromium): the dashboard's figures are skipped")
        return [paint, table]
    from playwright.sync_api import sync_playwright

    counted = f"document.querySelector('.moi-count')?.textContent === '{DASHBOARD_JOBS} of {DASHBOARD_JOBS} jobs'"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(f"{url}/login?next=/")
        page.fill("input[name=user]", "bench-dash")
        page.click("button[type=submit]")
        page.wait_for_function(counted, timeout=TIMEOUT * 1000)
        for _ in range(plan.runs):
            start = time.perf_counter()
            page.goto(f"{url}/")
            page.wait_for_function(counted, timeout=TIMEOUT * 1000, polling="raf")
            table.add((time.perf_counter() - start) * 1000)
            paint.add(page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime"))
        browser.close()
    return [paint, table]


def have_chromium() -> bool:
    if not os.path.exists(CHROMIUM) and os.geteuid() == 0:
        subprocess.run("apt-get install -y chromium", shell=True, check=False, capture_output=True)
    return os.path.exists(CHROMIUM)
