"""Job end -> websocket client, in its own process: ``python -m benchmarks.hosts_latency CONTEXT PORT SAMPLES``.

Configured by the environment, as ``benchmarks.hosts_round`` is; PORT is a moi relay
(``benchmarks.wsserver moi``) on the same Redis. One job at a time: each returns
``time.time()`` on the engine that ran it (the hosts share this machine's clock), and the
relay's frame announcing its Success is stamped as it arrives. Prints one JSON line of
percentiles in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from benchmarks.live import TIMEOUT, Stamps, following
from benchmarks.stats import percentile
from benchmarks.tasks import stamp
from moi import connections
from moi.job import submit

USER = "latency-user"


async def measure(context: str, port: int, samples: int) -> dict[str, float]:
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
    return {"p50": percentile(delays, 0.5), "p95": percentile(delays, 0.95), "at": time.time()}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))))
