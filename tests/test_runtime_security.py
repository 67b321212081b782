"""The embedded runtime as another local user would attack it, and as a crash or a reboot would treat it.

The attacker is a real second uid (``nobody``, through ``setpriv``); the
runtime is a real one, started by ``moi`` with no configuration, in a state
directory of the test's own.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from moi.storage import owner_only
from tests.conftest import run_moi

NOBODY = pwd.getpwnam("nobody")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to act as a second user (nobody)")


def as_nobody(script: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """A shell script run by the uid ``nobody``, with no group of ours."""
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )


def raw_redis_command(port: int, command: str) -> str:
    """What a client without the password gets for one command (bash's /dev/tcp: no Python needed)."""
    return f'exec 3<>/dev/tcp/127.0.0.1/{port} && printf "{command}\\r\\n" >&3 && read -r -t 5 line <&3; echo "$line"'


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A real embedded runtime (Redis and one engine), started by moi as a user with no configuration gets it."""
    state = tmp_path_factory.mktemp("embedded") / "state"
    env = {"MOI_REDIS_URL": "", "MOI_CONTEXTS": "", "MOI_STATE_DIR": str(state), "MOI_ENGINES": "1"}
    started = run_moi("submit", "--user", "alice", "--cmd", "return 1", "--block", env=env, timeout=240)
    assert started.returncode == 0, started.stderr
    try:
        yield state, env
    finally:
        run_moi("down", env=env)


def runtime_info(state: Path) -> dict[str, object]:
    return dict(json.loads((state / "runtime.json").read_text()))


def redis_port(state: Path) -> int:
    return int(str(runtime_info(state)["redis_url"]).rsplit(":", 1)[1].split("/")[0])


def test_state_directory_and_every_file_in_it_are_the_owners_alone(embedded) -> None:
    state, _ = embedded
    assert (state.stat().st_mode & 0o777) == 0o700
    for name in ("runtime.json", "runtime.log", "lock", "redis/password", "redis/redis.conf"):
        assert ((state / name).stat().st_mode & 0o777) == 0o600, name
    for path in [state, *state.rglob("*")]:
        if path.is_dir() and not path.is_symlink():  # nothing below can be reached by others
            assert path.stat().st_mode & 0o077 == 0, f"{path} is open to others"
    # The password is in no process's command line (which every user can read).
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert runtime_info(state)["redis_url"].split("@")[0].encode() not in cmdline  # type: ignore[union-attr]


def test_another_user_can_neither_reach_the_redis_nor_read_the_state(embedded) -> None:
    state, _ = embedded
    port = redis_port(state)
    for command in ("PING", "GET user-id-map", "SET forged 1", "KEYS *"):
        answer = as_nobody(raw_redis_command(port, command))
        assert answer.stdout.startswith("-NOAUTH"), (command, answer)
    for name in ("runtime.json", "redis/password", "redis/redis.conf"):
        read = as_nobody(f"cat {state / name}")
        assert read.returncode != 0 and "Permission denied" in read.stderr, name
    client = redis.Redis.from_url(str(runtime_info(state)["redis_url"]))
    assert client.get("forged") is None
    client.close()


def test_commands_that_run_code_or_write_files_are_gone_even_with_the_password(embedded) -> None:
    state, _ = embedded
    client = redis.Redis.from_url(str(runtime_info(state)["redis_url"]))
    try:
        assert client.ping()
        for command in (["CONFIG", "SET", "dir", "/tmp"], ["MODULE", "LIST"], ["DEBUG", "SLEEP", "0"], ["ACL", "LIST"]):
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(*command)
    finally:
        client.close()


def test_moi_status_shows_the_redis_url_without_its_password(embedded) -> None:
    state, env = embedded
    status = run_moi("status", env=env)
    password = (state / "redis" / "password").read_text().strip()
    assert "redis: redis://:***@127.0.0.1:" in status.stdout, status.stdout
    assert password not in status.stdout + status.stderr


@pytest.fixture
def attackers_dir() -> Iterator[Path]:
    """A directory in /tmp that ``nobody`` made and owns."""
    path = Path(tempfile.mkdtemp(prefix="moi-attack-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def planted_runtime() -> str:
    """The runtime.json an attacker would plant: their own Redis, passing for ours."""
    fake = {"pid": 1, "redis_url": "redis://127.0.0.1:1/0", "redis_pid": 1, "url_file": "/tmp/x.json"}
    return json.dumps({**fake, "engines": 1, "started": "now"}).replace('"', '\\"')


def test_moi_refuses_a_state_directory_that_another_user_made(attackers_dir, embedded) -> None:
    _, env = embedded
    target = attackers_dir / "state"
    planted = as_nobody(f'mkdir -p {target} && echo "{planted_runtime()}" > {target}/runtime.json')
    assert planted.returncode == 0, planted.stderr
    for command in (["status"], ["submit", "--cmd", "return 1"]):
        refused = run_moi(*command, env={**env, "MOI_STATE_DIR": str(attackers_dir / "state")})
        assert refused.returncode == 1, refused
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and f"belongs to uid {NOBODY.pw_uid}, not to you" in lines[0], refused.stderr


def test_moi_refuses_a_runtime_json_that_another_user_owns_or_anyone_can_write(tmp_path, embedded) -> None:
    _, env = embedded
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    planted = state / "runtime.json"
    planted.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "redis_url": "redis://127.0.0.1:1/0",
                "redis_pid": 1,
                "url_file": "/tmp/x.json",
                "engines": 1,
                "started": "now",
            }
        )
    )
    os.chown(planted, NOBODY.pw_uid, NOBODY.pw_gid)  # as if planted while the directory was open
    refused = run_moi("status", env={**env, "MOI_STATE_DIR": str(state)})
    assert refused.returncode == 1 and "runtime.json belongs to uid" in refused.stderr, refused
    os.chown(planted, os.geteuid(), os.getegid())
    planted.chmod(0o666)
    refused = run_moi("status", env={**env, "MOI_STATE_DIR": str(state)})
    assert refused.returncode == 1 and "can be written by other users" in refused.stderr, refused
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_state_directory_others_can_write_is_refused_and_an_old_open_one_is_tightened(tmp_path, embedded) -> None:
    _, env = embedded
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    refused = run_moi("status", env={**env, "MOI_STATE_DIR": str(shared)})
    assert refused.returncode == 1 and "can be written by other users" in refused.stderr, refused
    old = tmp_path / "old"
    old.mkdir()
    old.chmod(0o755)  # what an older moi left under the default umask
    owner_only.make_private_dir(old)
    assert (old.stat().st_mode & 0o777) == 0o700


# durability ---------------------------------------------------------------------


def jobs_of(user: str, env: dict[str, str]) -> str:
    shown = run_moi("userjobs", "--key", user, env=env, timeout=240)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


@pytest.mark.slow
def test_jobs_survive_moi_down_and_a_new_start(embedded) -> None:
    state, env = embedded
    for code in ("return 6 * 7", "raise ValueError('kept')"):
        run_moi("submit", "--user", "keeper", "--cmd", code, "--block", env=env, timeout=240)
    before = jobs_of("keeper", env)
    one = before.split("**********")[1].strip()
    assert before.count("status\t\t: ") == 2 and "kept" in before
    assert run_moi("down", env=env).stdout.strip() == "local runtime stopped"
    assert "not running" in run_moi("status", env=env).stdout
    assert jobs_of("keeper", env) == before  # this start reads the append-only file back
    assert one in run_moi("job", "--job-id", one, env=env).stdout


def test_a_killed_redis_server_is_restarted_and_keeps_what_was_written_a_second_before(embedded) -> None:
    state, env = embedded
    info = runtime_info(state)
    client = redis.Redis.from_url(str(info["redis_url"]))
    client.set("written-before", "kept")
    time.sleep(2.5)  # the append-only file is fsynced every second
    os.kill(int(info["redis_pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and runtime_info(state)["redis_pid"] == info["redis_pid"]:
        time.sleep(0.2)
    assert runtime_info(state)["redis_pid"] != info["redis_pid"], "the supervisor did not restart redis-server"
    deadline = time.monotonic() + 30
    while True:
        try:
            assert client.get("written-before") == b"kept"
            break
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    client.close()
    again = run_moi("submit", "--cmd", "return 'after'", "--block", env=env, timeout=240)
    assert again.returncode == 0 and "result\t\t: after" in again.stdout, again


# where jobs run -------------------------------------------------------------------


@pytest.mark.slow
def test_the_runtime_ignores_the_first_commands_directory_and_jobs_run_in_their_submitters(tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory, word in ((first, "one"), (second, "two")):
        directory.mkdir()
        (directory / "helper_mod.py").write_text(f"def word():\n    return {word!r}\n")
    (first / "redis.py").write_text("raise ImportError('a redis.py of the first directory')\n")
    state = tmp_path / "state"
    env = {**os.environ, "MOI_REDIS_URL": "", "MOI_CONTEXTS": "", "MOI_STATE_DIR": str(state), "MOI_ENGINES": "1"}
    code = "import helper_mod, os; return [helper_mod.word(), os.getcwd()]"
    # -P, as the moi command itself runs: the directory it is started in is not on its own sys.path.
    command = [sys.executable, "-P", "-m", "moi", "submit", "--cmd", code, "--block"]
    try:
        results = []
        for directory in (first, second, first):
            done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=240)
            assert done.returncode == 0, done.stderr
            results.append(done.stdout.strip().splitlines()[-1])
        assert results == [
            f"result\t\t: ['one', '{first}']",
            f"result\t\t: ['two', '{second}']",
            f"result\t\t: ['one', '{first}']",
        ]
    finally:
        subprocess.run([sys.executable, "-m", "moi", "down"], env=env, capture_output=True, timeout=120)
