"""Each job its own Slurm job (``--only schedulers-per-job``): moi's scheduler context against plain ``sbatch``.

A one-node Slurm made for the run (``tests/slurm.py``: slurmctld + slurmd, 8 CPUs) takes, in each round:

- ``JOBS`` one-core shell jobs submitted one by one through moi's scheduler context (``[context hpc]
  scheduler = slurm``): the time until every one has its Slurm id, and until every one has ended Success;
- the same jobs as ``sbatch --wrap`` in a shell loop (the floor: what Slurm itself costs), and through
  ``submitit`` where it installs, each until all have ended;
- the scheduler commands moi's poller ran per poll, with 10 and with ``JOBS`` jobs in Slurm (one ``squeue`` each:
  it does not grow with the jobs).

Needs root and Debian's slurm-wlm (installed by tests/slurm.py when missing).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.services import Services
from benchmarks.stats import Figure
from moi.compute.schedulers.runner import COMMAND_TIMEOUT, LocalRunner, Ran
from tests.slurm import Slurm, reason_unavailable

JOBS = 200
WAIT = 600.0


class CountingRunner(LocalRunner):
    """This machine, counting the scheduler commands run by name (squeue, sbatch ...)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout: float = COMMAND_TIMEOUT) -> Ran:
        self.counts[argv[0]] = self.counts.get(argv[0], 0) + 1
        return super().run(argv, stdin, timeout)


def measure(plan: Any, services: Services) -> tuple[str, list[Figure]]:
    reason = reason_unavailable()
    if reason is not None:
        print(f"schedulers-per-job skipped: {reason}")
        return ("each job its own Slurm job", [])
    figures = {
        name: Figure(name, unit)
        for name, unit in (
            (f"moi: {JOBS} jobs submitted to Slurm", "s"),
            (f"moi: {JOBS} jobs done (Success)", "s"),
            (f"sbatch loop: {JOBS} jobs submitted", "s"),
            (f"sbatch loop: {JOBS} jobs done", "s"),
            (f"submitit: {JOBS} jobs done", "s"),
            ("moi: overhead per job over the sbatch loop", "ms"),
            ("scheduler commands per poll, 10 jobs", "cmds"),
            (f"scheduler commands per poll, {JOBS} jobs", "cmds"),
        )
    }
    with Slurm(services.directory / "slurm") as slurm:
        import os

        os.environ["SLURM_CONF"] = str(slurm.config)
        for _ in range(plan.runs):
            _round(slurm, services, figures)
    return ("each job its own Slurm job (one-node Slurm, 8 CPUs)", list(figures.values()))


def _round(slurm: Slurm, services: Services, figures: dict[str, Figure]) -> None:
    names = list(figures)
    submitted, done, polls = _moi_round(slurm, JOBS)
    figures[names[0]].add(submitted)
    figures[names[1]].add(done)
    plain_submitted, plain_done = _sbatch_round(slurm, services.directory / "plain", JOBS)
    figures[names[2]].add(plain_submitted)
    figures[names[3]].add(plain_done)
    figures[names[5]].add(1000 * (done - plain_done) / JOBS)
    with_submitit = _submitit_round(services.directory / "submitit", JOBS)
    if with_submitit is not None:
        figures[names[4]].add(with_submitit)
    figures[names[6]].add(_moi_round(slurm, 10)[2])
    figures[names[7]].add(polls)


def _moi_round(slurm: Slurm, jobs: int) -> tuple[float, float, float]:
    """Seconds until every job has its Slurm id, until every one ended; squeue commands per poll meanwhile."""
    from moi.job import get_info, submit, system_call
    from moi.jobs import connections

    connections.configure(schedulers={"hpc": {"scheduler": "slurm", "poll": "1"}})
    try:
        poller: Any = connections.dispatcher(connections.context_spec("hpc"))
        counting, rounds = CountingRunner(), [0]
        poller.hand.runner = counting
        poll = poller.follow.poll

        def counted_poll(jobs: list[Any]) -> dict[str, int]:
            rounds[0] += 1
            return poll(jobs)  # type: ignore[no-any-return]

        poller.follow.poll = counted_poll
        started = time.monotonic()
        ids = [submit("hpc", "bench", "j", None, system_call, "true")[0] for _ in range(jobs)]
        _until(lambda: all(get_info(i).get("scheduler", {}).get("id") for i in ids), "moi's jobs in Slurm")
        submitted = time.monotonic() - started
        _until(lambda: all(get_info(i)["status"] == "Success" for i in ids), "moi's jobs done")
        done = time.monotonic() - started
        return submitted, done, counting.counts.get("squeue", 0) / max(1, rounds[0])
    finally:
        connections.configure(schedulers={})


def _sbatch_round(slurm: Slurm, directory: Path, jobs: int) -> tuple[float, float]:
    directory.mkdir(parents=True, exist_ok=True)
    loop = f'for i in $(seq {jobs}); do sbatch --parsable --job-name=plain -o {directory}/%j.out --wrap true; done'
    started = time.monotonic()
    subprocess.run(["sh", "-c", loop], env=slurm.env(), capture_output=True, check=True, timeout=WAIT)
    submitted = time.monotonic() - started
    _until(lambda: not slurm.job_ids("plain"), "the sbatch loop's jobs done")
    return submitted, time.monotonic() - started


def _submitit_round(directory: Path, jobs: int) -> float | None:
    try:
        import submitit
    except ImportError:
        print("submitit not installed: pip install submitit (the bench extra)", file=sys.stderr)
        return None
    logging.getLogger("submitit").setLevel(logging.ERROR)  # without accounting, each of its polls warns (no sacct)
    executor = submitit.AutoExecutor(folder=str(directory), cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition="debug", cpus_per_task=1)
    started = time.monotonic()
    futures = [executor.submit(int, 1) for _ in range(jobs)]
    for future in futures:
        future.result()
    return time.monotonic() - started


def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {WAIT:g}s: {what}")
        time.sleep(0.05)
