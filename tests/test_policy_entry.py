"""A job's time limit and retries where they come in: Python's submit and submit_many, the CLI, the HTTP API
(JSON and form), a service (a class and YAML), relaunch; and a YAML step's own time limit and retries.

Every bad value gets one line and stores nothing (the user's jobs stay as they were); good ones land in the
info object as ``moi.core.policy`` says. Against the session's Redis and cluster; the jobs of the checks
that need not run are held (their user paused), so that only the YAML steps' tests use an engine.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from examples.hetatm_service import Hetatm
from moi import services
from moi.cli.output import EXIT_USAGE
from moi.core.config import build_settings
from moi.core.info import Status, new_id, new_info, now
from moi.core.policy import DEFAULT_MAX_RETRIES
from moi.errors import InvalidValue, ServiceDefinitionError
from moi.job import pause, relaunch, resume, submit, submit_many
from moi.jobs import connections
from moi.services import Service
from moi.services.documents import load
from moi.storage import process
from tests import jobs
from tests.conftest import finished, kept, run_moi, until
from tests.test_api import call, multipart, payload, token_for
from tests.test_relay_security import server

USER = "policy-user"
# Each bad policy, with the field its one line names (the CLI's option is that field with dashes).
BAD = [
    ({"time_limit": 0}, "time_limit"),
    ({"time_limit": -5}, "time_limit"),
    ({"time_limit": "lots"}, "time_limit"),
    ({"time_limit": 1e999}, "time_limit"),
    ({"retries": -1}, "retries"),
    ({"retries": DEFAULT_MAX_RETRIES + 1}, "retries"),
    ({"retries": 1, "retry_on": ["NoSuchError"]}, "retry_on"),
    ({"time_limit": "1m", "soft_time_limit": "1m"}, "soft_time_limit"),
]
GOOD = {"time_limit": "15m", "soft_time_limit": 60, "retries": 3, "retry_on": ["OSError", 75], "backoff": "2s,5m"}
GOOD_FIELDS = {
    "time_limit": 900.0,
    "soft_time_limit": 60.0,
    "attempt": 1,
    "max_attempts": 4,
    "retry_on": ["OSError", 75],
    "backoff": [2.0, 300.0],
}


class Limited(Service):
    """A service whose jobs have a time limit and retries of their own (never run here: its user is paused)."""

    name = "limited"
    time_limit = "1h"
    retries = 2
    retry_on = (OSError, "JobTimeLimit")

    def run(self) -> str:
        return "true"


def info_of(handle: Any) -> dict[str, Any]:
    return dict(connections.store().get(handle.job_id))


def one_line(error: BaseException | str, naming: str) -> None:
    text = str(error).strip()
    assert text and "\n" not in text and naming in text, text


@pytest.fixture
def held(r: redis.Redis) -> Iterator[redis.Redis]:
    """The session's Redis, with USER paused: what this test submits is stored, never run."""
    connections.store().ensure_group(USER)
    pause(user=USER)
    yield r


@pytest.fixture
def settings_of() -> Iterator[Any]:
    """``moi.configure`` for one test; the settings as they were afterwards."""
    saved = process.overrides()
    yield connections.configure
    process.replace_overrides(saved, build_settings(saved))
    connections.reset()


def test_bad_policies_get_one_line_from_submit_submit_many_and_a_service_and_store_nothing(held) -> None:
    services.register(Hetatm)
    try:
        before = kept(held)
        for policy, field in BAD:
            for attempt in (
                partial(submit, "default", USER, "bad", None, jobs.add, 1, 2),
                partial(submit_many, "default", USER, "bad", None, jobs.add, [(1, 2), (3, 4)]),
                partial(services.submit, "hetatm", USER, {"residue": "ZN"}),
            ):
                with pytest.raises(InvalidValue) as refused:
                    attempt(**policy)
                one_line(refused.value, field)
        assert kept(held) == before
    finally:
        services.unregister("hetatm")


def test_good_policies_land_in_the_info_from_submit_and_submit_many(held) -> None:
    _, _, handle = submit("default", USER, "good", None, jobs.add, 1, 2, **GOOD, idempotent=True)
    assert {name: info_of(handle)[name] for name in GOOD_FIELDS} == GOOD_FIELDS and info_of(handle)["idempotent"]
    job_ids, _, batch = submit_many("default", USER, "many", None, jobs.add, [(1, 2), (3, 4)], **GOOD)
    for info in batch.store.get_many(job_ids):
        assert {name: info[name] for name in GOOD_FIELDS} == GOOD_FIELDS
    _, _, handle = submit("default", USER, "plain", None, jobs.add, 1, 2)
    assert not {"time_limit", "attempt", "max_attempts", "retry_on", "backoff", "idempotent"} & set(info_of(handle))


def test_max_retries_and_the_default_time_limits_come_from_the_settings(held, settings_of) -> None:
    settings_of(max_retries=2, time_limit="2h")
    with pytest.raises(InvalidValue) as refused:
        submit("default", USER, "many retries", None, jobs.add, 1, 2, retries=3)
    one_line(refused.value, "from 0 to 2")
    _, _, handle = submit("default", USER, "defaulted", None, jobs.add, 1, 2, retries=2)
    assert (info_of(handle)["time_limit"], info_of(handle)["max_attempts"]) == (7200.0, 3)
    settings_of(context_time_limits={"default": "3s"})  # the context's own wins over [moi] time_limit
    _, _, handle = submit("default", USER, "context's", None, jobs.add, 1, 2)
    assert info_of(handle)["time_limit"] == 3.0
    _, _, handle = submit("default", USER, "its own", None, jobs.add, 1, 2, time_limit="1m")
    assert info_of(handle)["time_limit"] == 60.0
    job_ids, _, batch = submit_many("default", USER, "many", None, jobs.add, [(1, 2)])
    assert batch.store.get(job_ids[0])["time_limit"] == 3.0
    with pytest.raises(InvalidValue) as refused:  # a soft limit past the context's hard one
        submit("default", USER, "soft", None, jobs.add, 1, 2, soft_time_limit="5s")
    one_line(refused.value, "soft_time_limit")


def test_a_local_retry_on_name_is_checked_by_importing_its_module(held) -> None:
    for name, why in (("tests.jobs.NoSuchError", "no such class"), ("tests.jobs.add", "no such class")):
        with pytest.raises(InvalidValue) as refused:
            submit("default", USER, "typo", None, jobs.add, 1, 2, retries=1, retry_on=[name])
        one_line(refused.value, why)
    # A module that is not here may be the engines' own: taken as written. moi's errors go bare, as builtins do.
    names = ["only_on_engines.Busy", "StepFailed", "JobTimeLimit", "ConnectionError", "moi.errors.FetchFailed"]
    _, _, handle = submit("default", USER, "names", None, jobs.add, 1, 2, retries=1, retry_on=names)
    assert info_of(handle)["retry_on"] == names


def test_relaunch_keeps_the_policy_from_its_first_attempt(r) -> None:
    job_id, _, handle = submit("default", USER, "again", None, jobs.add, 1, 2, **GOOD)
    assert handle.get(timeout=60) == 3
    store = connections.store()
    earlier = [{"attempt": 1, "engine": "e", "date_start": None, "date_end": None, "result": "x", "result_format": ""}]

    def as_if_retried(info: dict[str, Any]) -> dict[str, Any]:
        info.update(attempt=2, attempts=earlier, retry_at=1.0)
        return info

    store.update(job_id, as_if_retried, store.get(job_id))
    _, _, again = relaunch(job_id)
    info = info_of(again)
    assert {name: info[name] for name in GOOD_FIELDS} == GOOD_FIELDS
    assert "attempts" not in info and "retry_at" not in info
    assert again.get(timeout=60) == 3


def test_the_cli_refuses_a_bad_policy_with_exit_2_and_shows_a_good_one(held, tmp_path: Path) -> None:
    refused = [
        (["--time-limit=0"], "--time-limit"),
        (["--time-limit=-5"], "--time-limit"),
        (["--time-limit", "lots"], "--time-limit"),
        (["--time-limit", "1e999"], "--time-limit"),
        (["--retries=-1"], "--retries"),
        (["--retries", str(DEFAULT_MAX_RETRIES + 1)], "--retries"),
        (["--retries", "1", "--retry-on", "OSError,NoSuchError"], "--retry-on"),
        (["--time-limit", "1m", "--soft-time-limit", "1m"], "--soft-time-limit"),
    ]
    commands = tmp_path / "commands.txt"
    commands.write_text("echo one\necho two\n")
    before = kept(held)
    for index, (given, option) in enumerate(refused):
        each = ["--each", str(commands)] if index % 2 else ["--cmd", "return 1"]  # a batch, every other time
        done = run_moi("submit", *each, "--user", USER, *given)
        assert done.returncode == EXIT_USAGE, (given, done.stderr)
        one_line(done.stderr, f"Invalid value for '{option}'")
    assert kept(held) == before
    good = ["--time-limit", "15m", "--soft-time-limit", "1m", "--retries", "3", "--retry-on", "OSError"]
    good += ["--retry-on", "75", "--backoff", "2s,5m", "--idempotent"]
    done = run_moi("submit", "--cmd", "return 1", "--user", USER, *good)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("Submitted job id: ")[1].split()[0]
    info = connections.store().get(job_id)
    assert {name: info[name] for name in GOOD_FIELDS} == GOOD_FIELDS and info["idempotent"] is True
    shown = run_moi("job", "--job-id", job_id).stdout
    for line in ("time_limit\t: 15m", "attempt\t\t: 1 of 4", "retry_on\t: OSError, 75", "backoff\t\t: 2s, 5m"):
        assert line in shown, shown


def test_moi_run_takes_the_same_options_over_the_services_own(held) -> None:
    services.load_into(connections.store(), YAML_LIMITED, "limited.yaml")  # seen by the moi subprocess
    before = kept(held)
    done = run_moi("run", "yaml-limited", "--user", USER, "--time-limit", "0")
    assert done.returncode == EXIT_USAGE and kept(held) == before, done.stderr
    one_line(done.stderr, "Invalid value for '--time-limit'")
    done = run_moi("run", "yaml-limited", "--user", USER, "--time-limit", "30m", "--retries", "3")
    assert done.returncode == 0, done.stderr
    info = connections.store().get(done.stdout.split("Submitted job id: ")[1].split()[0])
    assert (info["time_limit"], info["max_attempts"]) == (1800.0, 4)

    # Checked over the service's own policy: its retries take --retry-on, its time limit bounds the others.
    for given, option in ((["--soft-time-limit", "3h"], "--soft-time-limit"), (["--time-limit", "3h"], "--time-limit")):
        done = run_moi("run", "yaml-limited", "--user", USER, *given)
        assert done.returncode == EXIT_USAGE, (given, done.stderr)
        one_line(done.stderr, f"Invalid value for '{option}'")
    done = run_moi("run", "yaml-limited", "--user", USER, "--retry-on", "OSError", "--soft-time-limit", "1h")
    assert done.returncode == 0, done.stderr
    info = connections.store().get(done.stdout.split("Submitted job id: ")[1].split()[0])
    assert (info["retry_on"], info["max_attempts"], info["soft_time_limit"]) == (["OSError"], 2, 3600.0)


def test_a_service_job_asking_for_no_retries_in_any_spelling_drops_the_services_retry_on(held) -> None:
    services.register(Limited)  # retries 2, retry_on OSError and JobTimeLimit
    try:
        for none in (0, "0", " 0", "00"):
            info = dict(connections.store().get(services.submit("limited", USER, retries=none)[0]))
            assert not {"attempt", "max_attempts", "retry_on", "backoff"} & set(info), (none, info)
    finally:
        services.unregister("limited")


def test_the_cli_shows_the_next_retry_and_the_earlier_attempts(held) -> None:
    job_id, _, _ = submit("default", USER, "waits", None, jobs.add, 1, 2, retries=2)
    store = connections.store()
    traceback = "Traceback (most recent call last):\n  File x\nOSError: the disk was busy\n"
    earlier = {"attempt": 1, "engine": "host:1", "date_start": "a", "date_end": "b", "result": traceback}

    def waiting(info: dict[str, Any]) -> dict[str, Any]:
        info.update(attempt=2, attempts=[earlier], retry_at=4102444800.0)  # 2100-01-01: still to come
        return info

    store.update(job_id, waiting, store.get(job_id))
    shown = run_moi("job", "--job-id", job_id).stdout
    assert "attempt\t\t: 2 of 3" in shown and "retry_at\t: 2100-01-01" in shown and "(in " in shown, shown
    assert "attempt 1 on host:1, ended b: OSError: the disk was busy" in shown, shown


def as_json(body: dict[str, Any]) -> bytes:
    """A JSON body as a client may send it: 1e999 as written (json.dumps would write Infinity)."""
    return json.dumps(body).replace("Infinity", "1e999").encode()


def as_form(policy: dict[str, Any]) -> dict[str, str]:
    """A policy as a form's text fields: a list as one comma list, 1e999 as written."""
    text = {
        list: lambda value: ",".join(map(str, value)),
        float: lambda value: "1e999" if value == 1e999 else str(value),
    }
    return {name: text.get(type(value), str)(value) for name, value in policy.items()}


def test_the_api_refuses_a_bad_policy_in_json_and_forms_and_keeps_a_good_one(held) -> None:
    services.register(Hetatm)
    alice = token_for(USER)

    async def refused(port: int, body: bytes, field: str, **options: Any) -> None:
        answer = await call(port, "POST", "/api/v1/jobs", alice, body, **options)
        assert answer.code == 422, (body, answer.body)
        one_line(payload(answer)["error"], field)

    async def scenario() -> None:
        async with server() as port:
            listed = payload(await call(port, "GET", "/api/v1/jobs", alice))
            for policy, field in BAD:
                await refused(port, as_json({"cmd": "return 1", **policy}), field)
                await refused(port, as_json({"service": "hetatm", **policy}), field)
                form, headers = multipart({"service": "hetatm", **as_form(policy)}, {})
                await refused(port, form, field, headers=headers)
            assert payload(await call(port, "GET", "/api/v1/jobs", alice)) == listed

            web_names = ["tests.jobs.NoSuchError", "ConnectionError"]  # a web user's names are never imported
            body = {"cmd": "return 1", **GOOD, "retry_on": web_names}
            made = payload(await call(port, "POST", "/api/v1/jobs", alice, body))
            info = payload(await call(port, "GET", f"/api/v1/jobs/{made['id']}", alice))
            assert {name: info[name] for name in GOOD_FIELDS} == {**GOOD_FIELDS, "retry_on": web_names}

            form, headers = multipart({"service": "hetatm", **as_form(GOOD), "idempotent": "true"}, {})
            made = payload(await call(port, "POST", "/api/v1/jobs", alice, form, headers=headers))
            info = payload(await call(port, "GET", f"/api/v1/jobs/{made['id']}", alice))
            assert {name: info[name] for name in GOOD_FIELDS} == GOOD_FIELDS and info["idempotent"] is True

    try:
        asyncio.run(scenario())
    finally:
        services.unregister("hetatm")


def test_a_services_policy_is_checked_when_it_is_defined_and_becomes_its_jobs(held, settings_of) -> None:
    for bad, field in BAD:
        with pytest.raises(ServiceDefinitionError) as refused:
            services.register(type("Bad", (Service,), {"name": "bad", "run": Limited.run, **bad}))
        one_line(refused.value, field)
        with pytest.raises(ServiceDefinitionError) as refused:
            document = json.dumps({"name": "bad", **bad, "steps": [{"run": "true"}]}).replace("Infinity", "1e999")
            services.load_into(connections.store(), document, "bad.yaml")
        one_line(refused.value, field)
    assert not held.exists(connections.store().keys.services)  # no definition was stored
    for step, why in (
        ({"time_limit": "0s"}, "time_limit"),
        ({"retries": -1}, "retries"),
        ({"retries": "x"}, "retries"),
    ):
        with pytest.raises(ServiceDefinitionError) as refused:
            load(json.dumps({"name": "bad", "steps": [{"run": "true", **step}]}))
        one_line(refused.value, why)

    services.register(Limited)
    try:
        _, _, handle = services.submit("limited", USER)
        wanted = {"time_limit": 3600.0, "attempt": 1, "max_attempts": 3, "retry_on": ["OSError", "JobTimeLimit"]}
        assert {name: info_of(handle)[name] for name in wanted} == wanted
        _, _, handle = services.submit("limited", USER, time_limit="10m", retries=0)  # less is fine
        assert info_of(handle)["time_limit"] == 600.0 and "max_attempts" not in info_of(handle)
        with pytest.raises(InvalidValue) as refused:
            services.submit("limited", USER, time_limit="2h")
        one_line(refused.value, "allows at most 1h")
        settings_of(max_retries=1)
        with pytest.raises(ServiceDefinitionError) as refused:  # [moi] max_retries holds at registration
            services.register(Limited)
        one_line(refused.value, "retries")
    finally:
        services.unregister("limited")

    [yaml] = load(YAML_LIMITED)
    assert yaml.checked_policy(DEFAULT_MAX_RETRIES) == {"time_limit": 7200.0, "attempt": 1, "max_attempts": 2}
    assert load(services.documents.dump([yaml]))[0].definition == yaml.definition  # dumped and loaded again


YAML_LIMITED = """
name: yaml-limited
time_limit: 2h
retries: 1
steps:
  - {name: one, run: "true", time_limit: 90s, retries: 2}
"""


# on the cluster: a YAML step's own time limit and retries ---------------------------------------

STEPS = """
services:
  - name: step-limit
    steps:
      - {name: wait, run: "sleep 60.31", time_limit: 2s}
      - {name: never, run: "true"}
  - name: step-retries
    steps:
      - {name: flaky, run: "test -e marker || { touch marker; echo first >&2; exit 1; }", retries: 2}
"""


def sleeping(pattern: str) -> list[str]:
    """The pids of processes whose command line holds ``pattern``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in line:
            found.append(pid)
    return found


def test_a_yaml_steps_time_limit_ends_its_command_and_fails_the_job(r) -> None:
    for cls in load(STEPS):
        services.register(cls)
    try:
        job_id, _, _ = services.submit("step-limit", "stepper")
        info = finished(job_id, timeout=90)
        assert info["status"] == Status.FAILED
        assert "step 'wait' failed: Time limit of 2s exceeded" in str(info["result"])
        steps = {
            node["step"]: node for node in connections.store().get_many(sorted(connections.store().children(job_id)))
        }
        assert steps["wait"]["status"] == Status.FAILED
        assert steps["wait"]["result"]["reason"] == "Time limit of 2s exceeded"
        assert steps["never"]["status"] == Status.CANCELLED
        until(lambda: not sleeping("sleep 60.31"), "the step's process group ended", timeout=10)
    finally:
        for cls in load(STEPS):
            services.unregister(cls.name)


def test_a_yaml_steps_retries_run_its_failed_command_again(r) -> None:
    for cls in load(STEPS):
        services.register(cls)
    try:
        job_id, _, _ = services.submit("step-retries", "stepper")
        info = finished(job_id, timeout=90)
        assert info["status"] == Status.SUCCESS, info["result"]
        [step] = connections.store().get_many(sorted(connections.store().children(job_id)))
        assert (step["status"], step["attempt"], step["max_attempts"]) == (Status.SUCCESS, 2, 3)
        assert [earlier["attempt"] for earlier in step["attempts"]] == [1]
        assert "exit code 1 means failed; stderr ends: first" in step["attempts"][0]["result"]
    finally:
        for cls in load(STEPS):
            services.unregister(cls.name)


def test_a_service_jobs_next_attempt_shows_only_its_own_steps(held) -> None:
    """What a retry of a service job finds: its earlier attempt's steps, which it removes from the tree."""
    for cls in load(STEPS):
        services.register(cls)
    try:
        job_id, _, _ = services.submit("step-retries", USER, retries=1)
        store = connections.store()
        old = new_info(new_id(), "flaky", "job", store.keys.channel(""), context="default")
        # Its engine's clock ran ahead: only the attempt it ran in tells it from this attempt's steps.
        old.update(step="flaky", status=Status.FAILED, date_start="2999-01-01 00:00:00.000000", date_end=now())
        old.update(job_attempt=1)
        store.add_under(job_id, [old])

        def second_attempt(info: dict[str, Any]) -> dict[str, Any]:
            info.update(attempt=2, attempts=[{"attempt": 1, "result": "step 'flaky' failed"}])
            return info

        store.update(job_id, second_attempt, store.get(job_id))
        resume(user=USER)
        assert finished(job_id, timeout=90)["status"] == Status.SUCCESS
        [step] = store.get_many(sorted(store.children(job_id)))
        assert step["id"] != old["id"] and (step["status"], step["job_attempt"]) == (Status.SUCCESS, 2)
    finally:
        for cls in load(STEPS):
            services.unregister(cls.name)
