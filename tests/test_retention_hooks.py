"""Retention that always runs (issue 30, point 4): a user's own ``mymodule.py``, importable only beside
the command that submitted its job, is archived and expired by sweepers that cannot import it, its hooks
run as hook jobs on an engine in the job's directory; a module gone everywhere still moves on, and says so."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from moi import files, services
from moi.core.config import build_settings
from moi.core.errors import QuotaExceeded, ServiceDefinitionError
from moi.core.info import Info, Status, is_finished
from moi.job import submit
from moi.jobs import connections
from moi.services import registry, retention_hooks, sweeper, unloadable
from moi.storage import process
from tests import jobs, service_defs
from tests.conftest import finished, run_moi, until
from tests.test_api import call, payload, token_for
from tests.test_metrics import samples
from tests.test_relay_security import server

MYMODULE = textwrap.dedent(
    '''
    """A user's own service: importable only where it lies, beside the command that submits it."""
    import os

    from moi.services import Parameter, Service


    class MyService(Service):
        name = "retain-mine"
        parameters = [Parameter("marks", "str", required=True), Parameter("key", "str", default="", secret=True)]
        archive_after = "1s"
        expire_after = "1s"

        def run(self):
            return "echo kept > output/kept.txt"

        def archive(self):
            self._mark("archive")

        def expire(self):
            self._mark("expire")

        def _mark(self, hook):
            with open(os.path.join(self.params["marks"], hook), "w") as mark:
                mark.write(f"{os.getpid()} {os.getcwd()} {os.path.isdir(self.directory)} {self.params['key']}")
    '''
)
CONFIGURED = {"MOI_SERVICES": "mymodule:MyService"}  # as the user's configuration names it, for every moi process
SECRET_KEY = "s3cret-key-of-the-hooks"
NOT_FOUND = "ModuleNotFoundError: No module named 'mymodule'"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The user's directory, holding their mymodule.py; the hooks write their marks to ``marks`` beside it."""
    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "mymodule.py").write_text(MYMODULE)
    (tmp_path / "marks").mkdir()
    return mine


def moi_in(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The moi command run in ``directory`` (first on its path, as ``python -m`` puts it), configured with mymodule."""
    return subprocess.run(
        [sys.executable, "-m", "moi", *args],
        cwd=directory,
        env={**os.environ, **CONFIGURED},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def submitted(home: Path, marks: Path) -> str:
    """A job of MyService, as its user submits it: ``moi run`` in the directory that holds mymodule.py."""
    given = ["--param", f"marks={marks}", "--param", f"key={SECRET_KEY}"]
    done = moi_in(home, "run", "retain-mine", *given, "--user", "mine", "--block")
    assert done.returncode == 0, done.stderr
    return done.stdout.split("Submitted job id: ")[1].split()[0]


def hook_jobs(job_id: str, count: int) -> dict[str, Info]:
    """A service job's hook jobs (its children named after their hook) by hook, once ``count`` have ended."""
    store = connections.store()

    def ended() -> list[Info] | None:
        found = [info for info in store.get_many(sorted(store.children(job_id))) if info.get("retention_hook")]
        return found if len(found) == count and all(is_finished(info) for info in found) else None

    return {info["name"]: info for info in until(ended, f"{count} hook job(s) of {job_id} ended", timeout=60)}


def mark(marks: Path, hook: str) -> tuple[int, Path, bool]:
    """What a hook wrote down: its process, its working directory, and whether the job's directory was there;
    and that it saw the secret parameter's real value (the job's info shows ``***``)."""
    pid, cwd, there, key = (marks / hook).read_text().split()
    assert key == SECRET_KEY
    return int(pid), Path(cwd), there == "True"


def test_a_service_only_its_submitter_imports_is_archived_and_expired_with_its_hooks_on_an_engine(
    r, home: Path, tmp_path: Path
) -> None:
    marks, store = tmp_path / "marks", connections.store()
    assert importlib.util.find_spec("mymodule") is None  # this process, a sweeper here, cannot import it
    job_id = submitted(home, marks)
    info = store.get(job_id)
    assert info["status"] == Status.SUCCESS and info["retention"]["hooks"] == ["archive", "expire"]
    assert info["params"]["key"] == "***"  # masked in the info; its hooks get the call's value (mark)
    directory = Path(files.directory_of(job_id, info)).resolve()
    connections.dispatch_all()  # as every long-lived sweeper runs (the runtime, moi server, moi watchdog)

    assert sweeper.sweep(store, moment=time.time() + 2) == [job_id]  # archive_after has passed, as it sees it
    assert store.get(job_id)["status"] == Status.ARCHIVED
    archive = hook_jobs(job_id, 1)["archive"]
    assert archive["status"] == Status.SUCCESS, archive["result"]
    assert archive["parent"] == job_id and "retention" not in archive  # a hook job is never archived itself
    assert r.zscore("moi:index", archive["id"]) is None  # among the job's steps, not in the listings
    pid, cwd, there = mark(marks, "archive")
    assert archive["engine"].endswith(f":{pid}") and pid != os.getpid()  # on an engine ...
    assert cwd.resolve() == directory and there  # ... in the job's directory

    # `moi watchdog --once` elsewhere: its configuration names mymodule, which it cannot import there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    due = r.zscore("moi:due:expire", job_id)
    time.sleep(max(0.0, due - time.time()) + 0.2)  # until expire_after has passed (a bounded wait)
    done = moi_in(elsewhere, "watchdog", "--once")
    assert f"moved service job {job_id} on by its retention" in done.stdout, done.stderr
    expire = hook_jobs(job_id, 2)["expire"]
    assert expire["status"] == Status.SUCCESS, expire["result"]
    info = store.get(job_id)
    assert info["status"] == Status.EXPIRED and "hook_errors" not in info
    pid, cwd, there = mark(marks, "expire")
    assert expire["engine"].endswith(f":{pid}") and cwd.resolve() == directory and there
    assert not directory.exists()  # removed by the hook job, after the hook
    assert not r.hlen("moi:services:unloadable")


def test_a_service_loadable_nowhere_still_moves_on_and_is_shown_with_its_import_error(
    r, home: Path, tmp_path: Path
) -> None:
    marks, store = tmp_path / "marks", connections.store()
    job_id = submitted(home, marks)
    (home / "mymodule.py").unlink()  # the user's module is gone: no engine can load the service any more
    shutil.rmtree(home / "__pycache__", ignore_errors=True)
    directory = Path(files.directory_of(job_id, store.get(job_id)))
    connections.dispatch_all()

    assert sweeper.sweep(store, moment=time.time() + 2) == [job_id]
    assert hook_jobs(job_id, 1)["archive"]["status"] == Status.FAILED
    assert sweeper.sweep(store, moment=time.time() + 4) == [job_id]
    hooks = hook_jobs(job_id, 2)
    info = store.get(job_id)
    assert info["status"] == Status.EXPIRED and not directory.exists() and not list(marks.iterdir())
    for hook in ("archive", "expire"):
        assert hooks[hook]["status"] == Status.FAILED and NOT_FOUND in hooks[hook]["result"]
        assert info["hook_errors"][hook].startswith(
            f"{hook}() not run: service 'retain-mine' cannot be loaded on engine "
        )
        assert info["hook_errors"][hook].endswith(NOT_FOUND)

    status = run_moi("status")
    shown = [line for line in status.stdout.splitlines() if line.startswith("service ")]
    assert len(shown) == 1 and shown[0].startswith(
        "service 'retain-mine' (mymodule:MyService) cannot be loaded on engine "
    )
    assert shown[0].endswith(f"): {NOT_FOUND}"), shown

    async def over_the_web() -> tuple[list[dict[str, object]], dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        async with server() as port:
            assert (await call(port, "GET", "/api/v1/services/unloadable", token_for("someone"))).code == 403
            ops = token_for("ops", admin=True)
            listed = payload(await call(port, "GET", "/api/v1/services/unloadable", ops))["services"]
            return listed, samples(await call(port, "GET", "/metrics", ops))

    listed, scraped = asyncio.run(over_the_web())
    assert [(s["service"], s["entry"], s["error"], s["by"]) for s in listed] == [
        ("retain-mine", "mymodule:MyService", NOT_FOUND, "engine")
    ]
    gauges = {
        dict(labels)["entry"]: (dict(labels), value)
        for (name, labels), value in scraped.items()
        if name == "moi_service_unloadable"
    }
    labels, value = gauges["mymodule:MyService"]
    assert value == 1 and labels["error"] == NOT_FOUND and labels["where"].startswith("engine ")


def test_a_configured_service_that_cannot_be_imported_is_noted_until_it_loads(
    r, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = connections.store()
    monkeypatch.setenv("MOI_SERVICES", CONFIGURED["MOI_SERVICES"])
    connections.reset()
    try:
        with pytest.raises(ServiceDefinitionError, match="cannot be imported"):
            services.known(store)  # as `moi server` reads [moi] services where mymodule is not on the path
        [noted] = unloadable.read(store)
        assert (noted.entry, noted.by) == ("mymodule:MyService", unloadable.CONFIGURATION)
        assert "No module named 'mymodule'" in noted.error and "reading [moi] services" in noted.where

        (tmp_path / "mymodule.py").write_text(MYMODULE)
        monkeypatch.syspath_prepend(str(tmp_path))
        assert "retain-mine" in services.known(store)  # it loads again: its note goes
        assert unloadable.read(store) == []

        # An engine's note stays: a process where the module happens to import says nothing about the engines.
        unloadable.record(store, "mymodule:MyService", "retain-mine", NOT_FOUND, "engine h:1", unloadable.ENGINE)
        monkeypatch.setattr(registry, "_configured", None)  # read the configuration again
        assert "retain-mine" in services.known(store)
        assert [noted.by for noted in unloadable.read(store)] == [unloadable.ENGINE]
    finally:
        sys.modules.pop("mymodule", None)
        monkeypatch.undo()
        registry._configured = None
        connections.reset()


def test_a_hook_that_hangs_ends_at_its_time_limit_and_an_expire_hook_still_removes_the_directory(
    r, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_hooks, "HOOK_TIME_LIMIT", 3.0)  # the session's contexts name no time limit
    services.register(service_defs.Hangs)
    try:
        store = connections.store()
        job_id = services.submit("hangs", "keeper")[0]
        assert finished(job_id)["status"] == Status.SUCCESS
        directory = Path(files.directory_of(job_id))
        assert sweeper.sweep(store, moment=time.time() + 2) == [job_id]  # archived: it has no archive()
        assert sweeper.sweep(store, moment=time.time() + 4) == [job_id]  # expired: its expire() hangs
        expire = hook_jobs(job_id, 1)["expire"]
        assert (expire["status"], expire["time_limit"]) == (Status.FAILED, 3.0)
        assert expire["result"] == "Time limit of 3s exceeded"
        assert not directory.exists()  # removed all the same, after the hook was ended
        info = store.get(job_id)
        assert info["status"] == Status.EXPIRED and "JobTimeLimit" in info["hook_errors"]["expire"]
    finally:
        services.unregister("hangs")

    # A context with a time limit of its own gives it to its hook jobs.
    settings = connections.settings()
    monkeypatch.setattr(connections, "settings", lambda: replace(settings, context_time_limits={"default": 60.0}))
    assert (retention_hooks.hook_time_limit("default"), retention_hooks.hook_time_limit("other")) == (60.0, 3.0)


def test_hook_jobs_run_for_a_user_at_the_hard_limit_and_never_count_among_their_jobs(r, spare, tmp_path: Path) -> None:
    saved = process.overrides()
    services.register(service_defs.Kept)
    try:
        store = connections.store()
        job_id = services.submit("kept", "quota-user", {"counts": str(tmp_path)})[0]
        assert finished(job_id)["status"] == Status.SUCCESS
        connections.configure(hard_limit=1)
        connections.dispatch_all()  # configure stopped this process's dispatchers: the hook job needs one
        waiting = submit("spare", "quota-user", "waits", None, jobs.add, 1, 2)[0]  # no engine there: it waits
        active = store.keys.active(store.get(job_id)["owner"])
        assert r.smembers(active) == {waiting}  # the user is at their hard limit

        assert sweeper.sweep(store, moment=time.time() + 2) == [job_id]
        assert r.smembers(active) == {waiting}  # the hook job queued is not among the user's jobs ...
        assert hook_jobs(job_id, 1)["archive"]["status"] == Status.SUCCESS  # ... and runs all the same
        assert (tmp_path / "archive.log").read_text().split() == [job_id, "True"]
        with pytest.raises(QuotaExceeded):
            submit("spare", "quota-user", "refused", None, jobs.add, 1, 2)  # the user's own limit stands
        assert r.smembers(active) == {waiting}
    finally:
        services.unregister("kept")
        process.replace_overrides(saved, build_settings(saved))
        connections.reset()


def test_moi_status_shows_an_unloadable_services_time_as_kept_when_it_is_not_one(r) -> None:
    kept = {"huge": ("1e300", "1e+300"), "text": ('"yesterday"', "yesterday"), "long": (str(10**30), str(10**30))}
    kept["nan"] = ("NaN", "NaN")
    for entry, (at, _) in kept.items():  # written behind moi's back
        r.hset("moi:services:unloadable", entry, f'{{"error": "E", "where": "engine h:1", "by": "engine", "at": {at}}}')
    done = run_moi("status")
    assert done.returncode == 0, done.stderr
    shown = sorted(line for line in done.stdout.splitlines() if line.startswith("service "))
    assert shown == sorted(
        f"service {entry} cannot be loaded on engine h:1 (last at {at}): E" for entry, (_, at) in kept.items()
    )
