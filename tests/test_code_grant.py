"""Running code over the web is a grant, and granted code runs as its user's own uid, without moi's secrets.

Real parts only: the session's Redis (with its password), its two engines (root),
a real server, and a real second uid for each user's code (see moi.compute.sandbox).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from moi import job as jobs
from moi.compute.sandbox import MAX_MESSAGE, child, confinement, real_uid
from moi.core.config import build_settings
from moi.core.info import Status
from moi.errors import CodeFailed, ConfigError
from moi.jobs import connections
from moi.jobs.grant import GRANT_NEEDED
from moi.storage import tokens
from tests.conftest import CODE_UIDS, REDIS_PASSWORD, finished, run_moi, until
from tests.test_api import call, payload
from tests.test_relay_security import connect, frames_until, server

JOBS = "/api/v1/jobs"


def token(user: str, **flags: Any) -> str:
    return tokens.create(connections.store(), user, **flags)


def live_processes_of(uid: int) -> list[int]:
    """Running processes of ``uid`` (a zombie runs nothing: a container's init may leave them unreaped).
    Its real uid, from /proc/PID/status: /proc/PID of a non-dumpable process is root's."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            owner = real_uid(int(name))
            state = Path(f"/proc/{name}/stat").read_bytes().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if owner == uid and state != b"Z":
            found.append(int(name))
    return found


async def relaunch_needs_the_grant(port: int, job_id: str) -> None:
    """bob's code job is run again only by a holder of the grant: not by his plain token, nor his cookie login."""
    assert finished(job_id)["sandbox"]["uid"] >= CODE_UIDS[0]  # the server wrote where it runs
    plain_bob = token("bob")
    refused = await call(port, "POST", f"{JOBS}/{job_id}/relaunch", plain_bob)
    assert (refused.code, payload(refused)) == (403, {"error": GRANT_NEEDED, "code": "forbidden"})
    ws = await connect(port, "bob")
    try:
        ws.write_message(json.dumps({"relaunch": [job_id]}))
        frames = await frames_until(ws, lambda frame: "error" in frame)
        assert frames[-1] == {"error": GRANT_NEEDED}
    finally:
        ws.close()
    granted_bob = token("bob", code=True)
    again = await call(port, "POST", f"{JOBS}/{job_id}/relaunch", granted_bob)
    assert again.code == 201 and finished(payload(again)["id"])["sandbox"] == finished(job_id)["sandbox"]
    # Code the CLI ran inside an engine, in bob's tree: the web never runs it again, grant or not.
    _, _, local = jobs.submit(None, "bob", "from the CLI", None, jobs.python_exec, "return 1")
    finished(local.job_id)
    inside = await call(port, "POST", f"{JOBS}/{local.job_id}/relaunch", granted_bob)
    assert inside.code == 403 and "inside the engine" in payload(inside)["error"]


# Granted code with the default [security] code_network = none: its own uid, and no network, not even loopback.
UID_AND_NETWORK = """
import os, socket
try:
    socket.create_connection(("127.0.0.1", {port}), 2).close()
except OSError as error:
    return [os.getuid(), error.errno]
return [os.getuid(), "connected"]
"""


def test_code_over_the_web_needs_a_grant_and_a_configured_sandbox(
    r, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = token("alice")
    made = run_moi("token", "create", "--user", "dave", "--code")
    assert made.returncode == 0, made.stderr
    granted = {"bob": token("bob", code=True), "dave": made.stdout.strip(), "ops": token("ops", admin=True)}
    assert "\tdave\tuser+code\t" in run_moi("token", "list").stdout
    monkeypatch.setenv("MOI_CODE_USERS", "carol")
    connections.reset()
    granted["carol"] = token("carol")

    async def scenario() -> list[str]:
        async with server() as port:
            for kind, cmd in (("python", "return 1"), ("system", "id"), ("python", "return (")):
                refused = await call(port, "POST", JOBS, plain, {"cmd": cmd, "cmd_type": kind})
                assert (refused.code, payload(refused)) == (403, {"error": GRANT_NEEDED, "code": "forbidden"})
            made = []
            for user, secret in granted.items():
                code = UID_AND_NETWORK.format(port=urlsplit(redis_url).port)
                answer = await call(port, "POST", JOBS, secret, {"cmd": code})
                assert answer.code == 201, (user, answer.body)
                made.append(payload(answer)["id"])
            await relaunch_needs_the_grant(port, made[0])
            return made

    try:
        made = asyncio.run(scenario())
        results = [finished(job_id)["result"] for job_id in made]
        uids = {uid for uid, _ in results}
        assert len(uids) == len(granted) and all(CODE_UIDS[0] <= uid <= CODE_UIDS[1] for uid in uids)  # one per user
        isolated = connections.settings().code_network == "none"  # as conftest found this machine allows
        assert {reached for _, reached in results} == {errno.ENETUNREACH if isolated else "connected"}

        monkeypatch.delenv("MOI_CODE_UIDS")  # the operator has not configured where code runs: refused at submit
        connections.reset()

        async def unconfigured() -> None:
            async with server() as port:
                refused = await call(port, "POST", JOBS, granted["bob"], {"cmd": "return 1"})
                assert refused.code == 403 and "[security] code_uids" in payload(refused)["error"]

        asyncio.run(unconfigured())
    finally:
        monkeypatch.undo()
        connections.reset()


# What the attacker's code tries, on the engine's host, as its own uid; each probe answers with what happened.
PROBES = """
import os, signal, socket
def tried(action):
    try:
        return ["done", repr(action())[:200]]
    except Exception as error:
        return [type(error).__name__, str(error)[:200]]
def read(path):
    with open(path, "rb") as handle:
        return handle.read()
def redis(command):
    with socket.create_connection(("127.0.0.1", {redis_port}), timeout=5) as sock:
        sock.sendall(command)
        return sock.recv(200).decode()
def password_anywhere():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("cmdline", "environ"):
            try:
                if {password!r} in read("/proc/%s/%s" % (pid, part)):
                    found.append("/proc/%s/%s" % (pid, part))
            except OSError:
                pass
    return found
def engine_pid():
    # The parent (as /proc numbers it: os.getppid() is 0 in a pid namespace of its own), or unshare's.
    def parent(pid):
        name, _, rest = read("/proc/%s/stat" % pid).rpartition(b")")
        return name.endswith(b"(unshare"), int(rest.split()[1])
    _, pid = parent("self")
    under_unshare, above = parent(pid)
    return above if under_unshare else pid
def fork_many():
    import subprocess
    started = []
    try:
        for _ in range(40):
            started.append(subprocess.Popen(["sleep", "60"]))
    except OSError as error:
        return [len(started), type(error).__name__]
    return [len(started), "no limit"]
kwargs["status_update"]("probing")
return {{
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()],
    "state_dir": tried(lambda: os.listdir({state_dir!r})),
    "connection_file": tried(lambda: read({cluster_file!r})),
    "session_dir": tried(lambda: os.listdir({session_dir!r})),
    "engine_environ": tried(lambda: read("/proc/%d/environ" % engine_pid())),
    "engine_memory": tried(lambda: read("/proc/%d/mem" % engine_pid())),
    "victim_job_dir": tried(lambda: os.listdir({victim_job_dir!r})),
    "victim_code_dir": tried(lambda: os.listdir({victim_code_dir!r})),
    "victim_signalled": tried(lambda: os.kill({victim_pid}, signal.SIGTERM)),
    "redis_get": tried(lambda: redis(b"GET x\\r\\n")),
    "redis_auth": tried(lambda: redis(b"AUTH default guessed\\r\\n")),
    "password_seen": password_anywhere(),
    "forks": fork_many(),
    "home": os.environ.get("HOME"),
    "environment": sorted(os.environ),
}}
"""


# The victim's code: says where it runs (its directory and pid, as the machine numbers it) in a status text,
# then sleeps. /proc/self: os.getpid() is its number in its own pid namespace, where the engine makes one.
SLEEPER = """
import os, time
kwargs["status_update"]("in %s %s" % (os.getcwd(), os.readlink("/proc/self")))
time.sleep(120)
"""


def where_it_runs(job_id: str) -> str | None:
    status = str(connections.store().get(job_id)["status"])
    return status if status.startswith("in ") else None


def test_granted_code_runs_as_its_users_uid_and_reaches_nothing_of_mois(
    r, redis_url: str, cluster_file: str, session_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOI_CODE_NETWORK", "host")  # the operator lets code use the network: still no way in
    monkeypatch.setenv("MOI_CODE_MAX_PROCESSES", "20")  # and a fork bomb stops at 20
    connections.reset()
    victim, attacker = token("vic", code=True), token("mallory", code=True)
    # Another user's job directory, holding their input.
    _, _, theirs = jobs.submit(None, "vic", "inputs", None, jobs.python_exec, "return 1", files={"secret.txt": b"s"})
    victim_job_dir = os.path.join(connections.settings().jobs_root, theirs.job_id)
    assert os.path.isdir(victim_job_dir)

    async def scenario() -> None:
        async with server() as port:
            sleeping = payload(await call(port, "POST", JOBS, victim, {"cmd": SLEEPER}))["id"]
            # The status text arrives in the info object while the code runs.
            status = until(lambda: where_it_runs(sleeping), "the victim's status text")
            _, victim_code_dir, victim_pid = status.split()
            victim_uid = os.stat(victim_code_dir).st_uid
            code = PROBES.format(
                redis_port=urlsplit(redis_url).port,
                password=REDIS_PASSWORD.encode(),
                state_dir=connections.settings().state_dir,
                cluster_file=cluster_file,
                session_dir=str(session_dir),
                victim_job_dir=victim_job_dir,
                victim_code_dir=victim_code_dir,
                victim_pid=int(victim_pid),
            )
            probe = payload(await call(port, "POST", JOBS, attacker, {"cmd": code, "name": "probe"}))["id"]
            info = finished(probe)
            assert info["status"] == Status.SUCCESS, info["result"]
            seen = info["result"]
            uid = seen["ids"][0]
            assert CODE_UIDS[0] <= uid <= CODE_UIDS[1] and uid != victim_uid
            assert seen["ids"] == [uid, uid, uid, []]  # its own uid and gid, no other group: not root's
            for probe_name in ("state_dir", "connection_file", "session_dir", "engine_environ", "engine_memory"):
                assert seen[probe_name][0] == "PermissionError", (probe_name, seen[probe_name])
            for probe_name in ("victim_job_dir", "victim_code_dir"):
                assert seen[probe_name][0] == "PermissionError", (probe_name, seen[probe_name])
            # Another uid's process (or, from a pid namespace of its own, no process it can name at all).
            assert seen["victim_signalled"][0] in ("PermissionError", "ProcessLookupError"), seen["victim_signalled"]
            assert seen["redis_get"] == ["done", repr("-NOAUTH Authentication required.\r\n")]
            assert seen["redis_auth"][0] == "done" and "WRONGPASS" in seen["redis_auth"][1]
            assert seen["password_seen"] == []
            assert seen["environment"] == ["HOME", "LANG", "PATH", "TMPDIR"]
            assert not os.path.exists(seen["home"])  # its working directory went with it
            forked, stopped_by = seen["forks"]
            assert forked < 20 and stopped_by == "BlockingIOError"  # RLIMIT_NPROC of its uid: 20 with itself
            until(lambda: not live_processes_of(uid), "the processes it left behind, killed at its end")

            # A cancel ends the sleeping code and everything of its uid; its directory goes too.
            assert (await call(port, "POST", f"{JOBS}/{sleeping}/cancel", victim)).code == 200
            assert finished(sleeping)["status"] == Status.CANCELLED
            until(lambda: not live_processes_of(victim_uid), "no process of the cancelled code's uid left")
            until(lambda: not os.path.exists(victim_code_dir), "the cancelled code's directory removed")

    try:
        asyncio.run(scenario())
    finally:
        monkeypatch.undo()
        connections.reset()


def test_security_settings_are_read_and_checked_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ini = tmp_path / "moi.ini"
    ini.write_text("[security]\ncode_users = alice, bob\ncode_uids = 300000-300009\ncode_network = host\n")
    monkeypatch.setenv("MOI_CONFIG_FP", str(ini))
    for name in ("MOI_CODE_UIDS", "MOI_CODE_PYTHON", "MOI_CODE_NETWORK"):
        monkeypatch.delenv(name, raising=False)
    settings = build_settings()
    assert (settings.code_user_names, settings.code_uid_range, settings.code_network) == (
        frozenset({"alice", "bob"}),
        (300000, 300009),
        "host",
    )
    for bad, said in [
        ("code_uids = 0-10", "above 0 (root)"),
        ("code_uids = 20-10", "must go up"),
        ("code_uids = lots", "LOW-HIGH"),
        ("code_network = internet", "none or host"),
        ("code_shell = /bin/bash", "has no option 'code_shell'"),
    ]:
        ini.write_text(f"[security]\n{bad}\n")
        with pytest.raises(ConfigError, match=re.escape(said)):
            build_settings()


# What granted code may write back, beside what RUNNER sends: each ends the job alone, with one line or a repr.
CHANNEL = "import os, time\nos.write(3, {line})\ntime.sleep(60)"  # fd 3: the runner's channel to the engine
UNRULY = [
    # Not JSON, nested past the parser, NaN: skipped; then a line past MAX_MESSAGE: the job stops there.
    (CHANNEL.format(line=f"b'not json\\n' + b'[' * 200_000 + b'\\n{{\"result\": NaN}}\\n' + b'[' * {MAX_MESSAGE + 1}"),
     Status.FAILED, f"the code wrote a line of more than {MAX_MESSAGE} bytes to moi: stopped there"),
    (CHANNEL.format(line=repr(b'{"result": 1e999}\n')), Status.SUCCESS, "inf"),
    (CHANNEL.format(line=repr(b'{"result": ["\\ud800", 18014398509481985]}\n')), Status.SUCCESS,
     "['\\ud800', 18014398509481985]"),
    (CHANNEL.format(line=repr(b'{"error": "bad \\udfff"}\n')), Status.FAILED, "bad \ufffd"),
    ("return float('inf')", Status.SUCCESS, "inf"),
    ("return '\\ud800'", Status.SUCCESS, "'\\ud800'"),
    ("return 1", Status.SUCCESS, 1),  # and the next job runs
]
# A process the code left that made itself non-dumpable (/proc/PID is root's then) and ignores SIGTERM:
# killed at the end all the same.
HIDDEN = """
import subprocess, sys
hidden = subprocess.Popen([sys.executable, "-c", "import ctypes, signal, time; ctypes.CDLL(None).prctl(4, 0); "
                           "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(1000)"],
                          stdout=subprocess.PIPE)
hidden.stdout.readline()
return hidden.pid
"""


def test_code_that_leaves_processes_or_writes_anything_back_ends_alone(
    r, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted = token("gus", code=True)
    config = tmp_path / "moi.ini"
    config.write_text("")
    config.chmod(0o644)
    monkeypatch.setenv("MOI_CONFIG_FP", str(config))
    connections.reset()

    async def scenario() -> list[str]:
        async with server() as port:
            # The config file (Redis password, cookie secret) must not be readable by a code uid.
            refused = await call(port, "POST", JOBS, granted, {"cmd": "return 1"})
            assert (refused.code, payload(refused)["error"]) == (
                403,
                f"code over the web needs the config file {config} closed to other users: chmod o-rwx {config}",
            )
            config.chmod(0o640)  # its group may read it: a code uid has no group
            made = []
            for kind, cmd in [("system", "sleep 1000 & echo done"), ("python", HIDDEN)] + [
                ("python", code) for code, _, _ in UNRULY
            ]:
                answer = await call(port, "POST", JOBS, granted, {"cmd": cmd, "cmd_type": kind})
                assert answer.code == 201, answer.body
                made.append(payload(answer)["id"])
            return made

    try:
        made = asyncio.run(scenario())
    finally:
        monkeypatch.undo()
        connections.reset()
    left, hidden, *unruly = (finished(job_id) for job_id in made)
    assert (left["status"], left["result"]) == (Status.SUCCESS, ["done\n", "", 0])  # not held by its sleep
    assert hidden["status"] == Status.SUCCESS
    until(lambda: not live_processes_of(left["sandbox"]["uid"]), "what the code left, killed at its end")
    for info, (_, status, result) in zip(unruly, UNRULY, strict=True):
        assert (info["status"], info["result"]) == (status, result)

    # Its directory not removed (a process left may still write there): one log line, the job's outcome stands.
    with pytest.raises(CodeFailed, match="the real outcome"), child._own_directory(CODE_UIDS[0]) as workdir:
        os.rmdir(workdir)
        Path(workdir).write_text("")  # not a directory now: removing it fails
        raise CodeFailed("the real outcome")
    assert f"code directory {workdir} not removed" in caplog.text
    os.unlink(workdir)


# An "engine" that starts code through the sandbox's own command chain, says the pid, then waits.
ENGINE = """
import subprocess, sys, time
from moi.compute.sandbox import confinement
command = confinement.switch({uid}, {network!r}, 20) + ["/bin/sh", "-c", "setsid sleep 1000 & sleep 1000"]
print(subprocess.Popen(command, start_new_session=True).pid, flush=True)
time.sleep(1000)
"""


@pytest.mark.parametrize("network", ["none", "host"])
def test_code_whose_engine_is_killed_dies_with_it(network: str) -> None:
    import signal
    import subprocess
    import sys

    uid = CODE_UIDS[1] - 1  # a uid of the range no other test gives out
    if network == "none" and os.environ.get("MOI_CODE_NETWORK") != "none":
        pytest.skip("this machine gives no network namespace")
    unshare = shutil.which("unshare", path=confinement.TOOLS_PATH)
    if unshare is None or not confinement.isolates(unshare, *confinement.PID_NAMESPACE):
        pytest.skip("this machine gives no pid namespace: what the code leaves may outlive its engine")
    engine = subprocess.Popen(
        [sys.executable, "-c", ENGINE.format(uid=uid, network=network)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert engine.stdout is not None and engine.stdout.readline().strip().isdigit()
        until(lambda: len(live_processes_of(uid)) >= 2, "the code and what it left in its own session")
    finally:
        engine.send_signal(signal.SIGKILL)  # the engine dies as an OOM kill would end it
        engine.wait()
    until(lambda: not live_processes_of(uid), "the code killed with its engine, setsid ones too")
