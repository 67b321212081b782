"""Engines on two hosts over SSH (network namespaces of this machine, each with its own sshd).

moi's Redis (a password, TLS only) and the controller listen on the bridge address; ipyparallel's SSH engine
launcher starts one engine on each host; a ``moi server`` on the main host dispatches and
watches. Where namespaces cannot be made (not root), the module is skipped with one line;
in CI (``CI=true``, as root) it runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from moi.storage.redis_server import free_port
from tests.browser import Server
from tests.conftest import ROOT, require, until
from tests.hosts import Hosts, reason_unavailable

# ipyparallel's SSH launcher polls each engine's host in a thread, which raises once that host is dead.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")]

WAIT = 180.0
FINISHED = ("Success", "Failed", "Cancelled")  # seconds for what the cluster does; nothing here is timed


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    require(reason_unavailable(), "multi-host tests")
    with Hosts(3, tmp_path_factory.mktemp("hosts"), tls=True) as made:  # the hosts reach Redis over TLS
        yield made


@pytest.fixture(scope="module")
def server(hosts: Hosts) -> Iterator[Server]:
    """``moi server`` on the main host: the hosts' context's dispatcher and watchdog, and its files' web server."""
    started = Server(free_port(), env=hosts.env())
    started.start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def hosts_redis(hosts: Hosts) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(hosts.redis_url, decode_responses=True)
    yield client
    client.close()


def submitted(hosts: Hosts, mode: str, count: int, slow: int = 0) -> list[str]:
    """Jobs submitted by a program on the main host (``tests.hosts_jobs``); their ids."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.hosts_jobs", mode, str(count), *([str(slow)] if slow else [])],
        cwd=ROOT, env=hosts.env(), capture_output=True, text=True, timeout=WAIT * 2,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def infos(client: redis.Redis, ids: list[str]) -> list[dict[str, Any]]:
    return [json.loads(text) for text in client.mget(ids)]


def host_of(info: dict[str, Any]) -> str:
    return str(info.get("engine") or "").rsplit(":", 1)[0]


def test_jobs_run_on_the_engines_of_every_host(hosts: Hosts, server: Server, hosts_redis: redis.Redis) -> None:
    ids = submitted(hosts, "spread", 200)  # one submit_many of 200, then 50 one by one
    assert len(ids) == 250
    ran = infos(hosts_redis, ids)
    assert {info["status"] for info in ran} == {"Success"}
    assert sorted(info["result"] for info in ran[:200]) == list(range(1, 201))
    assert {host_of(info) for info in ran} == {"moi-host1", "moi-host2", "moi-host3"}  # each names its host


def test_outputs_written_on_the_second_host_are_downloaded_through_the_main_hosts_server(
    hosts: Hosts, server: Server, hosts_redis: redis.Redis
) -> None:
    ids = submitted(hosts, "files", 3)  # three jobs of 3 s: one on each engine
    ran = until(
        lambda: (found := infos(hosts_redis, ids)) and all(info["status"] in FINISHED for info in found) and found,
        "the three jobs finished",
        WAIT,
    )
    assert {info["status"] for info in ran} == {"Success"}, [info["result"] for info in ran]
    on_second = next(info["id"] for info in ran if host_of(info) == "moi-host2")
    made = subprocess.run(
        [sys.executable, "-m", "moi", "token", "create", "--user", "hana"],
        env=hosts.env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        listed = client.get(f"/api/v1/jobs/{on_second}/files")
        assert listed.status_code == 200, listed.text
        assert "output/host.txt" in listed.text
        downloaded = client.get(f"/api/v1/jobs/{on_second}/files/output/host.txt")
    assert (downloaded.status_code, downloaded.text) == (200, "moi-host2")


def running_on(hosts_redis: redis.Redis, slow: list[str]) -> dict[str, str]:
    """The host each of the slow jobs runs on, once all of them run."""
    running = until(
        lambda: (found := infos(hosts_redis, slow)) and all(info["status"] == "Running" for info in found) and found,
        "every slow job running",
        WAIT,
    )
    return {host_of(info): info["id"] for info in running}


def test_a_host_whose_link_is_cut_fails_its_running_job_and_the_others_run_the_queued(
    hosts: Hosts, server: Server, hosts_redis: redis.Redis
) -> None:
    """The third host stays cut off: its engine lives on, reaching neither Redis nor the controller."""
    ids = submitted(hosts, "slow", 7, slow=3)  # three jobs of 20 s, one per engine, then four quick ones queued
    slow, queued = ids[:3], ids[3:]
    on = running_on(hosts_redis, slow)

    hosts.hosts[2].cut_link()  # `ip link set <its veth> down`: nothing crosses to or from the third host

    cut_off = on["moi-host3"]
    lost = until(lambda: (info := infos(hosts_redis, [cut_off])[0])["status"] == "Failed" and info, "lost", WAIT)
    assert "Engine lost" in str(lost["result"]), lost["result"]
    others = [on["moi-host1"], on["moi-host2"], *queued]
    finished = until(
        lambda: (found := infos(hosts_redis, others)) and all(info["status"] == "Success" for info in found) and found,
        "the other hosts' jobs and the queued ones done",
        WAIT,
    )
    assert {host_of(info) for info in finished} == {"moi-host1", "moi-host2"}
    assert hosts_redis.scard("moi:running") == 0  # nothing stays Running
    assert infos(hosts_redis, [cut_off])[0]["status"] == "Failed"  # and what was lost stays so


def test_a_host_that_dies_fails_its_running_job_and_the_other_host_runs_the_queued(
    hosts: Hosts, server: Server, hosts_redis: redis.Redis
) -> None:
    """Last in the module: the second host stays dead."""
    live = [host.name for host in hosts.hosts if host.reachable]  # the third is cut off by the test before
    ids = submitted(hosts, "slow", len(live) + 4, slow=len(live))  # a job of 20 s per engine, then four queued
    slow, queued = ids[: len(live)], ids[len(live) :]
    on = running_on(hosts_redis, slow)

    hosts.hosts[1].kill_everything()  # SIGKILL inside the second host's namespace: its engine and sshd

    lost = until(
        lambda: (info := infos(hosts_redis, [on["moi-host2"]])[0])["status"] == "Failed" and info, "engine lost", WAIT
    )
    assert "Engine lost" in str(lost["result"]), lost["result"]
    survivors = [name for name in live if name != "moi-host2"]
    others = [on[name] for name in survivors] + queued
    finished = until(
        lambda: (found := infos(hosts_redis, others)) and all(info["status"] == "Success" for info in found) and found,
        "the other hosts' jobs and the queued ones done",
        WAIT,
    )
    assert {host_of(info) for info in finished} == set(survivors)
    assert hosts_redis.scard("moi:running") == 0  # nothing stays Running


def test_an_admin_adds_an_engine_that_the_clusters_ssh_launcher_starts(hosts: Hosts, server: Server) -> None:
    """After the others (it changes how many engines there are): the operations page's add, over SSH."""
    made = subprocess.run(
        [sys.executable, "-m", "moi", "token", "create", "--user", "ops", "--admin"],
        env=hosts.env(), capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    api = httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {made.stdout.strip()}"})

    def engines() -> int | None:
        seen = api.get("/contexts").json()["contexts"]["hosts"]
        assert seen["scalable"]  # its cluster file is beside its connection file
        return seen["engines"]

    before = until(engines, "the hosts' engines counted", WAIT)
    added = api.post("/contexts/hosts/engines/add", timeout=WAIT)
    assert added.json() == {"context": "hosts", "engines_wanted": before + 1}, added.text
    until(lambda: engines() == before + 1, "an engine more, started over ssh by the cluster's own launcher", WAIT)
    hosts_of = {w["host"] for w in api.get("/workers").json()["workers"] if w["state"] != "lost"}
    assert "moi-host1" in hosts_of  # ipyparallel's ssh launcher fills the hosts in order
