"""Job end -> a watcher on this host: ``python -m benchmarks.hosts_latency ws|browser CONTEXT PORT N``.

Configured by the environment, as ``benchmarks.hosts_round`` is. One job at a time: each
returns ``time.time()`` on the engine that ran it (the hosts share this machine's clock).

- ``ws``: PORT is a moi relay (``benchmarks.wsserver moi``) on the same Redis; the clock
  stops when a websocket client has the relay's frame announcing the job's Success.
- ``browser``: PORT is a ``moi server``; headless Chromium shows the user's live list
  (``/list``, moi.js), and the clock stops when the job's row turns Success in the page
  (a MutationObserver notes the moment, on the page's own clock of the same machine).

Prints one JSON line of percentiles in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from benchmarks.api import CHROMIUM
from benchmarks.live import TIMEOUT, Stamps, following
from benchmarks.stats import percentile
from benchmarks.tasks import stamp
from moi.job import submit
from moi.jobs import connections

USER = "latency-user"

# Notes, per job id, when its row first shows Success: added so, or changed to it.
OBSERVER = """() => {
  window.moiSeen = {};
  const list = document.getElementById("moi-jobs");
  new MutationObserver((records) => {
    const now = performance.timeOrigin + performance.now();
    for (const record of records) {
      const rows = record.type === "attributes" ? [record.target] : [...record.addedNodes];
      for (const row of rows) {
        if (row.dataset && row.dataset.status === "Success" && !(row.dataset.id in window.moiSeen)) {
          window.moiSeen[row.dataset.id] = now;
        }
      }
    }
  }).observe(list, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"]});
}"""


async def websocket_delays(context: str, port: int, samples: int) -> list[float]:
    ctx = connections.get_context(context)
    loop = asyncio.get_running_loop()
    first, _, handle = submit(ctx, USER, "warm", None, stamp)
    handle.get(TIMEOUT)
    conn = await following(port, USER, first)
    stamps = Stamps()
    reader = asyncio.create_task(stamps.read_frames(conn))
    delays = []
    try:
        for _ in range(samples):
            job_id, _, _ = await loop.run_in_executor(None, submit, ctx, USER, "stamp", None, stamp)
            await stamps.wait(lambda job_id=job_id: job_id in stamps.frames)
            received, info = stamps.frames.pop(job_id)
            delays.append((received - info["result"]) * 1e3)
    finally:
        reader.cancel()
        conn.close()
    return delays


def browser_delays(context: str, port: int, samples: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    ctx = connections.get_context(context)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/login?next=/list")
        page.fill("input[name=user]", USER)
        page.click("button[type=submit]")
        page.wait_for_selector('#moi-jobs[data-connected="true"]', timeout=TIMEOUT * 1000)
        page.evaluate(OBSERVER)
        delays = []
        for _ in range(samples):
            job_id, _, handle = submit(ctx, USER, "stamp", None, stamp)
            ended = float(handle.get(TIMEOUT))
            page.wait_for_function(f"window.moiSeen['{job_id}'] !== undefined", timeout=TIMEOUT * 1000)
            seen = float(page.evaluate(f"window.moiSeen['{job_id}']"))
            delays.append(seen - ended * 1e3)
        browser.close()
    return delays


def main(mode: str, context: str, port: int, samples: int) -> dict[str, Any]:
    if mode == "ws":
        delays = asyncio.run(websocket_delays(context, port, samples))
    else:
        delays = browser_delays(context, port, samples)
    return {"p50": percentile(delays, 0.5), "p95": percentile(delays, 0.95)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
