"""The moi command as a user runs it: output in the seed's format, one-line errors."""

from __future__ import annotations

import re
import uuid

from moi.storage.redis_server import free_port
from tests.conftest import nothing_stored, run_moi

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def submitted_id(stdout: str) -> str:
    match = re.match(rf"Submitted job id: ({UUID})\n", stdout)
    assert match, stdout
    return match.group(1)


def block_fields(stdout: str) -> dict[str, str]:
    """key -> value of a `********** id **********` block (result may span lines)."""
    fields: dict[str, str] = {}
    key = None
    for line in stdout.splitlines():
        match = re.match(r"^(\w+)\t+: (.*)$", line)
        if match:
            key, value = match.groups()
            fields[key] = value
        elif key == "result":
            fields[key] += "\n" + line
    return fields


def test_submit_python_block_prints_the_seed_block(r) -> None:
    done = run_moi("submit", "--cmd", "x = 5; return x + 10", "--block")
    assert done.returncode == 0, done.stderr
    job_id = submitted_id(done.stdout)
    lines = done.stdout.splitlines()
    assert lines[1] == f"********** {job_id} **********"
    assert lines[2] == "context\t\t: default"
    assert "date_created\t: " in done.stdout and "date_end\t: " in done.stdout
    assert lines[-1] == "result\t\t: 15"
    keys = [line.split("\t")[0] for line in lines[2:-1]]
    assert keys[: len(SEED_ORDER)] == SEED_ORDER
    fields = block_fields(done.stdout)
    assert (fields["status"], fields["name"], fields["type"], fields["url"]) == (
        "Success", "no-user-cmd-submit", "job", "None",
    )  # fmt: skip


SEED_ORDER = [
    "context", "date_created", "date_end", "date_start", "id", "name", "parent", "pubsub", "status", "type", "url",
]  # fmt: skip


def test_submit_system_block(r) -> None:
    done = run_moi("submit", "--cmd", "echo 'hello from moi'", "--block", "--cmd-type=system")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "result\t\t: ['hello from moi\\n', '', 0]"


def test_failed_system_job_then_job_shows_readable_traceback(r) -> None:
    done = run_moi("submit", "--cmd", "sleep 0.2; foobar", "--cmd-type=system")
    job_id = submitted_id(done.stdout)
    assert done.stdout.count("\n") == 1  # no --block: returns at once
    from tests.conftest import finished

    finished(job_id)
    shown = run_moi("job", "--job-id", job_id)
    assert shown.returncode == 0
    fields = block_fields(shown.stdout)
    assert fields["status"] == "Failed"
    assert fields["result"].startswith("Traceback (most recent call last):\n")
    assert "Failed to execute: sleep 0.2; foobar" in fields["result"]
    assert "foobar: not found" in fields["result"]


def test_userjobs_full_and_summary_sorted_by_date(r) -> None:
    assert run_moi("userjobs", "--key", "example").stderr.strip() == "Unknown key: example"
    first = submitted_id(run_moi("submit", "--user", "example", "--cmd", "return 42", "--block").stdout)
    second = submitted_id(
        run_moi("submit", "--user", "example", "--cmd", "return float('crash and burn')", "--block").stdout
    )
    full = run_moi("userjobs", "--key", "example")
    assert full.returncode == 0
    assert full.stdout.index(first) < full.stdout.index(second)
    assert "result\t\t: 42" in full.stdout
    assert "ValueError: could not convert string to float: 'crash and burn'" in full.stdout

    summary = run_moi("userjobs", "--key", "example", "--summary").stdout.splitlines()
    assert [line.split("\t")[1:] for line in summary] == [
        [f"id: {first}", "status: Success"],
        [f"id: {second}", "status: Failed"],
    ]
    assert all(line.startswith("date: ") for line in summary)

    group_id = r.hget("user-id-map", "example")
    by_id = run_moi("userjobs", "--key", group_id, "--summary")
    assert by_id.stdout.splitlines() == summary

    users = run_moi("users").stdout.splitlines()
    assert f"example\t{group_id}" in users


def test_submit_with_name_and_context(r) -> None:
    done = run_moi("submit", "--cmd", "return 1", "--name", "named", "--context", "default", "--block")
    assert block_fields(done.stdout)["name"] == "named"


# bad input: one line, non-zero exit, nothing half-written --------------------------


def one_line_error(done) -> str:
    assert done.returncode != 0
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_unknown_job_id(r) -> None:
    missing = str(uuid.uuid4())
    assert one_line_error(run_moi("job", "--job-id", missing)) == f"Unknown job id: {missing}"


def test_job_id_that_is_not_an_id(r) -> None:
    assert one_line_error(run_moi("job", "--job-id", "../etc")).startswith("Not a job id: '../etc'")


def test_unknown_user_key(r) -> None:
    assert one_line_error(run_moi("userjobs", "--key", "nobody")) == "Unknown key: nobody"


def test_redis_unreachable_names_the_url(r) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["job", "--job-id", str(uuid.uuid4())], ["submit", "--cmd", "return 1"], ["users"]):
        line = one_line_error(run_moi(*args, env={"MOI_REDIS_URL": url}))
        assert line.startswith(f"Redis is unreachable at {url}"), line


def test_a_job_for_an_unreachable_cluster_waits_queued(r, tmp_path) -> None:
    env = {"MOI_CONTEXTS": f"offline={tmp_path / 'ipcontroller-client.json'}", "MOI_CLUSTER_TIMEOUT": "1"}
    done = run_moi("submit", "--cmd", "return 1", "--user", "ghost", env=env)

    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("Submitted job id: ")[1].strip()
    assert done.stderr.strip() == f"Job {job_id} waits in the queue of context 'offline': its cluster is not online"
    shown = run_moi("job", "--job-id", job_id, env=env)
    assert "status\t\t: Queued" in shown.stdout
    assert "waiting\t\t: for the cluster of context 'offline', not seen online yet" in shown.stdout


def test_unknown_context(r) -> None:
    line = one_line_error(run_moi("submit", "--cmd", "return 1", "--context", "gpu"))
    assert line == "Unknown context: 'gpu'; known contexts: default"
    assert nothing_stored(r)


def test_invalid_cmd_type(r) -> None:
    line = one_line_error(run_moi("submit", "--cmd", "ls", "--cmd-type", "perl"))
    assert "'perl' is not one of 'python', 'system'" in line
    assert nothing_stored(r)


def test_python_code_that_does_not_compile(r) -> None:
    line = one_line_error(run_moi("submit", "--cmd", "return (", "--user", "typo"))
    assert line.startswith("Python code does not compile:") and "(line 1)" in line
    assert nothing_stored(r)


def test_unreadable_config_file(r, tmp_path) -> None:
    line = one_line_error(run_moi("users", env={"MOI_CONFIG_FP": str(tmp_path / "missing.ini")}))
    assert line.startswith("Cannot read the configuration file")
