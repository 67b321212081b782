"""CPU time per job, by process: which side of the system pays for a job.

Sums user+system CPU of this process (the submitter), the ipyparallel
controller (and its scheduler children), the engines and redis-server over
one round, and divides by the number of jobs.
"""

from __future__ import annotations

from collections.abc import Callable

import psutil


def _role(proc: psutil.Process, me: int) -> str | None:
    if proc.pid == me:
        return "submitter"
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "redis-server" in cmdline:
        return "redis"
    if "ipyparallel.engine" in cmdline or "ipengine" in cmdline:
        return "engines"
    if "ipyparallel.controller" in cmdline or "ipcontroller" in cmdline:
        return "controller"
    return None


def _processes() -> dict[str, list[psutil.Process]]:
    me = psutil.Process()
    roles: dict[str, list[psutil.Process]] = {}
    for proc in [me, *me.children(recursive=True), *_redis_servers()]:
        role = _role(proc, me.pid)
        if role is not None:
            roles.setdefault(role, []).append(proc)
    return roles


def _redis_servers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] and "redis-server" in p.info["name"]]


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + getattr(times, "children_user", 0) + getattr(times, "children_system", 0)
    return total


def cpu_per_job(run: Callable[[int], float], n: int) -> dict[str, float]:
    """Microseconds of CPU per job for each role, over one ``run(n)``."""
    roles = _processes()
    before = {role: _cpu(procs) for role, procs in roles.items()}
    seconds = run(n)
    used = {role: (_cpu(procs) - before[role]) / n * 1e6 for role, procs in roles.items()}
    used["wall"] = seconds / n * 1e6
    return used
