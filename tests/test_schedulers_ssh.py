"""A scheduler context over SSH, used as a user would: its login node (tests.login_node) shares no filesystem
with moi. Each job runs as a process on the node (``scheduler = local`` there: Slurm is not reachable from the
node's namespace), its inputs staged over SFTP, its files listed, downloaded (Range too) and fetched over SFTP
through the HTTP routes and the CLI, its log followed live over the websocket; and the node taken off the
network and brought back."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.simple_httpclient import HTTPStreamClosedError

import moi.jobs.connections
from moi.core.errors import ClusterUnavailable, PathRefused
from moi.core.info import Status, new_id
from moi.job import get_info, submit, system_call
from moi.jobfiles.directory import directory_of
from moi.jobs import job_files, remote_files
from moi.web.api_ops import contexts
from tests.conftest import finished, run_moi, until
from tests.login_node import LoginNode
from tests.test_file_routes import fetch
from tests.test_relay_security import connect, frames_until, is_get_of, server

WAIT = 90  # seconds: a bound on a hang, never an assertion on time
# A job that says it started, then waits for a file "go" in its directory there before it ends.
WAITS_FOR_GO = "echo started; while [ ! -e go ]; do sleep 0.2; done; echo last line"


def options(node: LoginNode, **more: str) -> dict[str, str]:
    """A ``[context NAME]`` section's options for a scheduler context on the node."""
    given = {
        "scheduler": "local",
        "host": node.address,
        "user": "root",
        "key": str(node.key),
        "known_hosts": str(node.known_hosts),
        "workdir": node.workdir,
        "poll": "0.3",
    }
    return {**given, **more}


@pytest.fixture
def hpc(store, login_node: LoginNode) -> Iterator[LoginNode]:
    """Contexts on the node: ``hpc`` (files stay there), ``homing`` (``fetch = on-end``), ``flaky`` and
    ``brittle`` (``grace = 1s``)."""
    moi.jobs.connections.configure(
        schedulers={
            "hpc": options(login_node),
            "homing": options(login_node, fetch="on-end"),
            "flaky": options(login_node),
            "brittle": options(login_node, grace="1s"),
        }
    )
    yield login_node
    login_node.up()
    moi.jobs.connections.configure(schedulers={})


def there(node: LoginNode, job_id: str, command: str) -> str:
    """A shell command's output, run in the job's directory on the node."""
    ran = node.run_there(f"cd {node.workdir}/{job_id} && {command}")
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def config_file(node: LoginNode, tmp_path: Path) -> dict[str, str]:
    """The environment of a ``moi`` command that knows the context ``hpc``, from an INI file."""
    lines = ["[context hpc]", *(f"{name} = {value}" for name, value in options(node).items())]
    path = tmp_path / "moi.ini"
    path.write_text("\n".join(lines) + "\n")
    return {"MOI_CONFIG_FP": str(path)}


def test_inputs_are_staged_there_and_outputs_listed_and_downloaded_over_sftp(hpc: LoginNode, tmp_path: Path) -> None:
    command = "cat input/in.txt > out.txt && mkdir -p output/deep && echo made > output/deep/x.txt && echo logged"
    job_id, _, _ = submit("hpc", "alice", "stage", None, system_call, command, files={"in.txt": b"0123456789"})
    done = finished(job_id, timeout=WAIT)
    assert done["status"] == Status.SUCCESS and "logged" in done["result"], done
    assert there(hpc, job_id, "cat out.txt") == "0123456789"  # the job read its input there
    here = Path(directory_of(job_id))
    assert not (here / "out.txt").exists()  # no shared path: the output is not on this machine

    listed = {entry.path: entry for entry in job_files.list(job_id)}
    assert listed["out.txt"].size == 10 and listed["output/deep"].is_dir and listed["output/deep/x.txt"].size == 5
    assert [entry.path for entry in job_files.list(job_id, "output", recursive=False)] == ["output/deep"]
    with job_files.open(job_id, "out.txt") as handle:
        handle.seek(3)
        assert handle.read(4) == b"3456"

    async def over_http() -> None:
        async with server() as port:
            listing = json.loads((await fetch(port, f"/moi-files/{job_id}/")).body)["entries"]
            assert {"path": "out.txt", "is_dir": False, "size": 10} in listing
            whole = await fetch(port, f"/moi-files/{job_id}/out.txt")
            assert (whole.code, whole.body) == (200, b"0123456789")
            part = await fetch(port, f"/moi-files/{job_id}/out.txt", headers={"Range": "bytes=2-5"})
            assert (part.code, part.body, part.headers["Content-Range"]) == (206, b"2345", "bytes 2-5/10")
            head = await fetch(port, f"/moi-files/{job_id}/out.txt", method="HEAD")
            assert (head.code, head.headers["Content-Length"]) == (200, "10")
            api = await fetch(port, f"/api/v1/jobs/{job_id}/files/output/deep/x.txt")
            assert (api.code, api.body) == (200, b"made\n")
            log = await fetch(port, f"/api/v1/jobs/{job_id}/log")
            assert (log.code, log.body) == (200, b"logged\n")
            missing = await fetch(port, f"/moi-files/{job_id}/nothing.txt")
            assert missing.code == 404
            stranger = await fetch(port, f"/moi-files/{job_id}/out.txt", user="mallory")
            assert stranger.code == 404

    asyncio.run(over_http())
    env = config_file(hpc, tmp_path)
    listed_by_cli = run_moi("files", "--job-id", job_id, env=env)
    assert listed_by_cli.returncode == 0 and "out.txt" in listed_by_cli.stdout, listed_by_cli.stderr
    downloaded = run_moi("download", "--job-id", job_id, "output/deep/x.txt", env=env)
    assert downloaded.stdout == "made\n", downloaded.stderr
    assert not (here / "out.txt").exists()

    fetched = run_moi("files", "fetch", job_id, env=env)
    assert fetched.returncode == 0 and fetched.stdout.startswith("Fetched "), fetched.stderr
    assert (here / "out.txt").read_bytes() == b"0123456789" and (here / "output/deep/x.txt").read_text() == "made\n"
    assert get_info(job_id)["scheduler"]["fetched"]


def test_a_path_out_of_the_job_directory_there_is_refused_in_one_line(hpc: LoginNode, tmp_path: Path) -> None:
    job_id, _, _ = submit("hpc", "alice", "links", None, system_call, "ln -s /etc/hostname a-link; ln -s /etc up")
    assert finished(job_id, timeout=WAIT)["status"] == Status.SUCCESS
    for path, words in (("../x", "climbs out"), ("/etc/hostname", "absolute")):
        with pytest.raises(PathRefused, match=words):
            job_files.open(job_id, path)
    listed = [entry.path for entry in job_files.list(job_id)]
    assert "a-link" not in listed and not any(path.startswith("up") for path in listed)
    for through_a_link in ("a-link", "up/hostname"):  # never followed: refused, as here
        with pytest.raises(PathRefused, match="goes through a link"):
            job_files.open(job_id, through_a_link)
    refused = run_moi("download", "--job-id", job_id, "../../etc/passwd", env=config_file(hpc, tmp_path))
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.strip().count("\n") == 0 and "climbs out with '..'" in refused.stderr
    here = run_moi("files", "fetch", new_id())
    assert here.returncode != 0 and "has no files on a cluster" in here.stderr and here.stderr.count("\n") == 1


def test_fetch_on_end_brings_the_files_home_as_the_job_ends(hpc: LoginNode) -> None:
    job_id, _, _ = submit("homing", "alice", "home", None, system_call, "echo result > result.txt")
    done = finished(job_id, timeout=WAIT)
    assert done["status"] == Status.SUCCESS and done["scheduler"]["fetched"], done
    here = Path(directory_of(job_id))
    assert (here / "result.txt").read_text() == "result\n" and here.stat().st_mode & 0o777 == 0o700
    assert "result.txt" in [entry.path for entry in job_files.list(job_id)]  # read here now


def test_the_log_is_followed_live_from_the_cluster_over_the_websocket(hpc: LoginNode) -> None:
    job_id, group_id, _ = submit("hpc", "logger", "chatty", None, system_call, WAITS_FOR_GO)
    until(lambda: get_info(job_id)["status"] == Status.RUNNING, "the job running there", WAIT)

    async def scenario() -> list[str]:
        async with server() as port:
            owner = await connect(port, "logger")
            owner.write_message('{"get": []}')
            await frames_until(owner, is_get_of(group_id))
            gate = threading.Event()  # the pool of remote file work full as the log is asked for: it waits
            held = [asyncio.ensure_future(remote_files.in_pool(gate.wait)) for _ in range(remote_files.WAITING)]
            owner.write_message(json.dumps({"log": job_id}))
            await asyncio.sleep(1)  # a tick or two of the follower against a full pool: it keeps following
            gate.set()
            await asyncio.gather(*held)
            lines: list[str] = []

            def has(text: str) -> Any:
                def seen(frame: dict[str, Any]) -> bool:
                    lines.extend(frame.get("log", {}).get("lines", []))
                    return any(text in line for line in lines)

                return seen

            await frames_until(owner, has("started"))
            await asyncio.to_thread(there, hpc, job_id, "touch go")
            await frames_until(owner, has("last line"))
            await frames_until(owner, lambda frame: frame.get("log", {}).get("end") is True)
            return lines

    assert asyncio.run(scenario()) == ["started", "last line"]
    assert not os.path.exists(os.path.join(directory_of(job_id), "framework.log"))  # read there, never copied


def cut_off(node: LoginNode) -> None:
    """The node off the network, and this machine's connections to it dropped at once, as keepalives would
    find them dropped a little later (the poller then meets an unreachable node on its next call)."""
    node.down()
    subprocess.run(["ss", "-K", "dst", node.address], capture_output=True, check=False)


def test_a_node_out_of_reach_keeps_new_jobs_queued_and_submitted_ones_as_they_are(hpc: LoginNode) -> None:
    running, _, _ = submit("flaky", "alice", "before", None, system_call, WAITS_FOR_GO)
    until(lambda: get_info(running)["status"] == Status.RUNNING, "the first job running there", WAIT)
    cut_off(hpc)
    try:
        waiting, _, _ = submit("flaky", "alice", "during", None, system_call, "echo made while it was down")
        held = until(lambda: (info := get_info(waiting)).get("waiting") and info, "a reason to wait", WAIT)
        assert held["status"] == Status.QUEUED and "context flaky, which cannot be reached" in held["waiting"]
        assert hpc.address not in held["waiting"] and "scheduler" not in held  # the account is not the user's
        assert get_info(running)["status"] == Status.RUNNING  # within its grace: kept as it was
        with pytest.raises(ClusterUnavailable) as raised:
            job_files.list(running)  # its files wait there: one line says why they cannot be read now
        assert str(raised.value) == "the cluster of context flaky cannot be reached now; try again later"
        seen = contexts(moi.jobs.connections.store(), admin=False)["flaky"]["scheduler"]
        assert (seen["reachable"], seen["where"], seen["error"]) == (False, "", "")  # the detail is for admins
        assert hpc.address in contexts(moi.jobs.connections.store())["flaky"]["scheduler"]["error"]
    finally:
        hpc.up()
    there(hpc, running, "touch go")
    assert finished(waiting, timeout=WAIT)["status"] == Status.SUCCESS
    assert finished(running, timeout=WAIT)["status"] == Status.SUCCESS


def test_a_node_out_of_reach_past_the_grace_fails_its_jobs_saying_so(hpc: LoginNode) -> None:
    job_id, _, _ = submit("brittle", "alice", "stranded", None, system_call, WAITS_FOR_GO)
    until(lambda: get_info(job_id)["status"] == Status.RUNNING, "the job running there", WAIT)
    cut_off(hpc)
    try:
        done = finished(job_id, timeout=WAIT)
    finally:
        hpc.up()
    assert done["status"] == Status.FAILED and "out of reach for more than 1s" in done["result"], done
    assert done["scheduler"]["state"] == "UNREACHABLE"


# A name that is not UTF-8, one with a terminal escape, a deep tree (deeper than Python's recursion limit:
# test_ssh_runner; here a cheaper one).
ODD_FILES = (
    "printf x > $(printf 'bad\\377') && printf y > $(printf 'esc\\033[31m')"
    " && d=$(printf 'd/%.0s' $(seq 30)) && mkdir -p $d && echo deep > ${d}f && echo last line"
)


def test_odd_files_there_are_listed_read_and_fetched_and_the_job_ends(hpc: LoginNode, tmp_path: Path) -> None:
    deep = "d/" * 30 + "f"
    job_id, _, _ = submit("hpc", "alice", "odd", None, system_call, ODD_FILES)
    homing, _, _ = submit("homing", "alice", "odd", None, system_call, ODD_FILES)  # both at once: cheaper
    assert finished(job_id, timeout=WAIT)["status"] == Status.SUCCESS
    files = [entry.path for entry in job_files.list(job_id) if not entry.is_dir and "/" not in entry.path]
    assert sorted(files) == ["esc\x1b[31m", "framework.log"]  # the name that is not UTF-8 skipped
    assert deep in [entry.path for entry in job_files.list(job_id, "d/")]
    with job_files.open(job_id, deep) as handle:
        assert handle.read() == b"deep\n"
    listed = run_moi("files", "--job-id", job_id, env=config_file(hpc, tmp_path))
    assert listed.returncode == 0 and "\x1b" not in listed.stdout and "esc\\x1b[31m" in listed.stdout
    done = finished(homing, timeout=WAIT)  # its files brought home as it ended, the odd name skipped
    assert done["status"] == Status.SUCCESS and done["scheduler"]["fetched"], done
    assert (Path(directory_of(homing)) / deep).read_text() == "deep\n"


def test_remote_file_work_is_bounded_and_a_cluster_lost_mid_read_is_one_line(hpc: LoginNode) -> None:
    job_id, _, _ = submit("hpc", "alice", "small", None, system_call, "echo 0123456789 > out.txt")
    assert finished(job_id, timeout=WAIT)["status"] == Status.SUCCESS

    async def over_http() -> None:
        async with server() as port:
            gate = threading.Event()
            held = [asyncio.ensure_future(remote_files.in_pool(gate.wait)) for _ in range(remote_files.WAITING)]
            try:
                busy = await fetch(port, f"/moi-files/{job_id}/out.txt")
                assert busy.code == 503 and "too many requests for files on clusters" in busy.body.decode()
            finally:
                gate.set()
                await asyncio.gather(*held)
            served = await fetch(port, f"/moi-files/{job_id}/out.txt")
            assert (served.code, served.body) == (200, b"0123456789\n")

    asyncio.run(over_http())
    there(hpc, job_id, "head -c 16M /dev/zero > big.bin")

    async def cut_mid_download() -> tuple[int, int]:
        received: list[int] = []

        def arrived(chunk: bytes) -> None:
            if not received:
                remote_files.close_all()  # the cluster's connection lost once the download has begun
            received.append(len(chunk))

        async with server() as port:
            try:
                cut = await fetch(port, f"/moi-files/{job_id}/big.bin", streaming_callback=arrived)
            except HTTPStreamClosedError:  # the connection closed mid-body: the client knows it is short
                return 599, sum(received)
            return cut.code, sum(received)

    code, size = asyncio.run(cut_mid_download())
    assert code == 599 and 0 < size < 16 << 20  # the connection closed: the client knows it is short
    with job_files.open(job_id, "out.txt") as handle:
        remote_files.close_all()  # its connection gone under an open file: never a silent, short end
        with pytest.raises(ClusterUnavailable, match="^the cluster of context hpc cannot be reached now"):
            handle.read()


def test_a_fetch_that_fails_still_ends_the_job_with_a_short_reason(hpc: LoginNode, tmp_path: Path) -> None:
    command = "mkdir sub && echo x > sub/f; " + WAITS_FOR_GO
    job_id, _, _ = submit("homing", "alice", "blocked", None, system_call, command)
    until(lambda: get_info(job_id)["status"] == Status.RUNNING, "the job running there", WAIT)
    here = Path(directory_of(job_id))
    here.mkdir(parents=True, exist_ok=True)
    (here / "sub").symlink_to(tmp_path)  # in the way of its files coming home
    there(hpc, job_id, "touch go")
    done = finished(job_id, timeout=WAIT)
    assert done["status"] == Status.SUCCESS and "fetched" not in done["scheduler"], done
    assert (
        done["scheduler"]["fetch_error"] == "a symbolic link is in the way in its directory here"
    )  # no path, no account
    assert list(tmp_path.iterdir()) == []


def test_a_workdir_that_cannot_be_written_there_fails_the_job_saying_so(hpc: LoginNode) -> None:
    moi.jobs.connections.configure(schedulers={"readonly": options(hpc, workdir="/proc/moi-jobs")})
    try:
        job_id, _, _ = submit("readonly", "alice", "nowhere", None, system_call, "true")
        done = finished(job_id, timeout=WAIT)
        assert done["status"] == Status.FAILED and "cannot be written" in done["result"], done
        assert "\n" not in done["result"]
    finally:
        moi.jobs.connections.configure(schedulers={})
