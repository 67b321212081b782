"""Jobs submitted to the default context: ``python -m tests.hosts_jobs spread|files|slow N [SLOW]``.

Run in its own process with ``Hosts.env()`` (or the Slurm tests' environment), so that it
is configured as an operator's program on the main host would be, and the test process
keeps the session's Redis.
Prints one JSON line: the ids submitted.
"""

from __future__ import annotations

import json
import sys

from moi.job import submit
from moi.jobs.batch import submit_many
from tests import jobs


def main(mode: str, count: int, slow: int = 2) -> None:
    if mode == "spread":  # one submit_many of `count` items and `count // 4` jobs one by one
        ids, _, batch = submit_many(None, "hana", "spread", None, jobs.add, [(i, 1) for i in range(count)])
        one_by_one = [submit(None, "hana", f"one {i}", None, jobs.add, i, 1) for i in range(count // 4)]
        batch.wait(timeout=300)
        for _, _, handle in one_by_one:
            handle.wait(timeout=300)
        ids += [job_id for job_id, _, _ in one_by_one]
    elif mode == "files":  # `count` jobs in job directories, each writing an output
        ids = [submit(None, "hana", f"files {i}", None, jobs.write_host, 3, workdir=True)[0] for i in range(count)]
    else:  # `slow` jobs of 20 s (one per engine), then `count - slow` quick ones that wait for an engine
        ids = [submit(None, "hana", f"slow {i}", None, jobs.sleepy, 20)[0] for i in range(slow)]
        ids += [submit(None, "hana", f"quick {i}", None, jobs.sleepy, 0.1)[0] for i in range(count - slow)]
    print(json.dumps(ids))


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
