"""SshRunner against a real login node (tests.login_node): commands over SSH, files over SFTP, and no shared disk.

The node is a network namespace of this machine with its own sshd, whose workdir is a tmpfs of its own
mount namespace: a file written there is not on this machine's filesystem. Where namespaces or sshd
cannot be had (not root), these tests are skipped with one line; in CI they run.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from moi.compute.schedulers import sftp_files
from moi.compute.schedulers.fetching import bring_home
from moi.compute.schedulers.ssh_runner import SshRunner
from moi.core.errors import PathRefused, SchedulerUnavailable
from tests.conftest import until
from tests.hosts import make_key_pair
from tests.login_node import LoginNode


@pytest.fixture(scope="module")
def runner(login_node: LoginNode) -> Iterator[SshRunner]:
    made = SshRunner(login_node.spec("hpc"))
    yield made
    made.close()


@pytest.fixture
def job_dir(login_node: LoginNode) -> str:
    """A job directory's path on the node, under its workdir (not made)."""
    return f"{login_node.workdir}/job-{secrets.token_hex(4)}"


def unavailable(runner: SshRunner, timeout: float = 60) -> str:
    """The one line of the SchedulerUnavailable that running a command there raises."""
    with pytest.raises(SchedulerUnavailable) as raised:
        runner.run(["true"], timeout=timeout)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_a_command_runs_on_the_node_with_its_output_and_exit_code(runner: SshRunner, login_node: LoginNode) -> None:
    ran = runner.run(["sh", "-c", 'echo "$SSH_CONNECTION"; echo complaint >&2; exit 3'])
    assert ran.returncode == 3 and not ran.ok
    assert ran.stdout.split()[2] == login_node.address  # the connection's far end: the node
    assert ran.stderr == "complaint\n" and ran.problem() == "complaint"


def test_each_argument_reaches_the_command_as_it_is_and_stdin_too(runner: SshRunner) -> None:
    ran = runner.run(["printf", "%s|", "two words", "$HOME;`id`", "'quoted'", ""])
    assert ran.stdout == "two words|$HOME;`id`|'quoted'||"  # no shell on the node expanded them
    assert runner.run(["cat"], stdin="fed to it\n").stdout == "fed to it\n"


def test_a_program_missing_on_the_node_is_one_line(runner: SshRunner, login_node: LoginNode) -> None:
    with pytest.raises(SchedulerUnavailable) as raised:
        runner.run(["moi-no-such-scheduler", "--version"])
    assert str(raised.value) == f"moi-no-such-scheduler is not installed on root@{login_node.address}:22"


def test_files_round_trip_over_sftp_and_are_only_on_the_node(
    runner: SshRunner, login_node: LoginNode, job_dir: str
) -> None:
    runner.make_dirs(f"{job_dir}/outputs/deep")
    runner.make_dirs(f"{job_dir}/outputs/deep")  # again: already there is fine
    runner.write_file(f"{job_dir}/job.sh", b"#!/bin/sh\necho ran from the node\n", mode=0o755)
    runner.write_file(f"{job_dir}/outputs/result.txt", b"0123456789")
    runner.write_file(f"{job_dir}/inputs/data.bin", b"\x00\xff")  # its parent made on the way
    assert runner.read_file(f"{job_dir}/outputs/result.txt") == b"0123456789"
    assert runner.read_file(f"{job_dir}/outputs/result.txt", offset=3, length=4) == b"3456"
    assert runner.read_file(f"{job_dir}/outputs/result.txt", offset=8) == b"89"
    assert runner.read_file(f"{job_dir}/outputs/result.txt", offset=20) == b""
    listed = runner.list_files(job_dir)
    assert [(entry.path, entry.size) for entry in listed] == [
        ("inputs/data.bin", 2),
        ("job.sh", 33),
        ("outputs/result.txt", 10),
    ]
    assert all(entry.mtime > 0 for entry in listed)
    assert runner.run([f"{job_dir}/job.sh"]).stdout == "ran from the node\n"  # its mode made it executable
    # No shared filesystem: the node has the files, this machine has not.
    assert not Path(job_dir).exists()
    there = login_node.run_there(f"cd {job_dir} && cat outputs/result.txt && echo && stat -c %a job.sh outputs")
    assert there.stdout.split() == ["0123456789", "755", "755"]


def test_a_file_that_is_not_there(runner: SshRunner, job_dir: str) -> None:
    with pytest.raises(FileNotFoundError):
        runner.read_file(f"{job_dir}/absent.txt")
    assert runner.list_files(f"{job_dir}/gone") == []


def test_symbolic_links_are_not_followed(runner: SshRunner, login_node: LoginNode, job_dir: str) -> None:
    runner.write_file(f"{job_dir}/own.txt", b"mine")
    made = login_node.run_there(f"ln -s /etc {job_dir}/etc && ln -s /etc/hostname {job_dir}/name")
    assert made.returncode == 0, made.stderr
    assert [entry.path for entry in runner.list_files(job_dir)] == ["own.txt"]
    with pytest.raises(OSError, match="symbolic link"):
        runner.write_file(f"{job_dir}/name", b"not through a link")


@pytest.mark.parametrize("method", ["write_file", "read_file", "list_files", "make_dirs"])
def test_a_path_that_climbs_out_is_refused(runner: SshRunner, login_node: LoginNode, method: str) -> None:
    path = f"{login_node.workdir}/job/../../../etc/passwd"
    with pytest.raises(ValueError, match="'..'"):
        getattr(runner, method)(*([path, b"x"] if method == "write_file" else [path]))


def test_threads_share_one_runner(runner: SshRunner, job_dir: str) -> None:
    def one(number: int) -> tuple[str, bytes]:
        runner.write_file(f"{job_dir}/{number}.txt", str(number).encode())
        return runner.run(["echo", str(number)]).stdout, runner.read_file(f"{job_dir}/{number}.txt")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert results == [(f"{number}\n", str(number).encode()) for number in range(8)]


def test_closed_the_runner_connects_again(login_node: LoginNode) -> None:
    own = SshRunner(login_node.spec("hpc"))
    assert own.run(["echo", "first"]).stdout == "first\n"
    with ThreadPoolExecutor(1) as pool:
        under_way = pool.submit(own.run, ["sleep", "30"])
        until(lambda: own.run(["pgrep", "-x", "sleep"]).ok, "the sleep under way on the node", timeout=30)
        own.close()  # the call under way ends, at once
        with pytest.raises(SchedulerUnavailable, match="^the connection to root@.* was closed$"):
            under_way.result()
    own.close()  # twice is fine
    assert own.run(["echo", "again"]).stdout == "again\n"
    own.close()


@pytest.mark.parametrize("known", ["empty", "another key"])
def test_an_unknown_or_changed_host_key_is_refused(login_node: LoginNode, tmp_path: Path, known: str) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    if known == "another key":
        make_key_pair(tmp_path / "impostor")
        known_hosts.write_text(f"{login_node.address} {(tmp_path / 'impostor.pub').read_text()}")
    message = unavailable(SshRunner(login_node.spec("hpc", known_hosts=str(known_hosts))))
    assert login_node.address in message and "host key is not trusted" in message


def test_no_known_hosts_file_is_refused(login_node: LoginNode, tmp_path: Path) -> None:
    message = unavailable(SshRunner(login_node.spec("hpc", known_hosts=str(tmp_path / "none"))))
    assert f"no known_hosts file {tmp_path / 'none'}" in message


def test_a_key_the_node_does_not_trust_is_refused(login_node: LoginNode, tmp_path: Path) -> None:
    make_key_pair(tmp_path / "stranger")
    message = unavailable(SshRunner(login_node.spec("hpc", key=str(tmp_path / "stranger"))))
    assert message.startswith(f"cannot reach root@{login_node.address}:22: it refused the login")
    assert "PRIVATE KEY" not in message and str(tmp_path / "stranger") in message
    message = unavailable(SshRunner(login_node.spec("hpc", key=str(tmp_path / "none"))))
    assert message.endswith(f"cannot use the key {tmp_path / 'none'}: No such file or directory")


def test_a_closed_port_is_refused(login_node: LoginNode) -> None:
    message = unavailable(SshRunner(login_node.spec("hpc", port=2222)))
    assert message == f"cannot reach root@{login_node.address}:2222: connection refused (no sshd on port 2222?)"


def test_a_node_off_the_network_is_unavailable_then_back(login_node: LoginNode) -> None:
    connected = SshRunner(login_node.spec("hpc"), connect_timeout=2)
    fresh = SshRunner(login_node.spec("hpc"), connect_timeout=2)
    try:
        assert connected.run(["true"]).ok
        login_node.down()
        try:
            assert "did not answer within 3s" in unavailable(connected, timeout=3)  # its connection went silent
            assert f"cannot reach root@{login_node.address}:22" in unavailable(fresh)  # within its connect timeout
        finally:
            login_node.up()
        assert connected.run(["echo", "back"]).stdout == "back\n"
        assert fresh.run(["echo", "back"]).stdout == "back\n"
    finally:
        connected.close()
        fresh.close()


def test_a_connection_the_node_dropped_is_made_again(login_node: LoginNode) -> None:
    own = SshRunner(login_node.spec("hpc"))
    try:
        with pytest.raises(SchedulerUnavailable) as raised:  # its sshd session killed under the command
            own.run(["sh", "-c", "kill -9 $PPID; sleep 30"])
        assert login_node.address in str(raised.value) and "\n" not in str(raised.value)
        assert own.run(["echo", "again"]).stdout == "again\n"
        assert own.list_files(f"{login_node.workdir}/no-job") == []  # and a new SFTP session with it
    finally:
        own.close()


def test_a_name_that_is_not_utf8_and_a_very_deep_tree_are_walked(
    runner: SshRunner, login_node: LoginNode, job_dir: str
) -> None:
    deep = "/".join(["d"] * 1100)  # deeper than Python's recursion limit
    made = login_node.run_there(
        f"mkdir -p {job_dir}/{deep} && echo x > {job_dir}/{deep}/f && echo ok > {job_dir}/good.txt"
        f" && printf bad > {job_dir}/$(printf 'bad\\377') && mkdir {job_dir}/$(printf 'dir\\377')"
        f" && echo hidden > {job_dir}/$(printf 'dir\\377')/inner.txt"
    )
    assert made.returncode == 0, made.stderr
    assert [entry.path for entry in runner.list_files(job_dir)] == [f"{deep}/f", "good.txt"]  # the others skipped


def test_a_walk_past_its_bound_is_an_os_error(runner: SshRunner, job_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for number in range(4):
        runner.write_file(f"{job_dir}/{number}.txt", b"x")
    monkeypatch.setattr(sftp_files, "MAX_ENTRIES", 3)  # the bound (100,000 entries) made small
    with pytest.raises(OSError, match="more than 3 entries"):
        runner.list_files(job_dir)


def test_an_opened_file_is_read_by_its_handle_and_no_link_is_followed_on_the_way(
    runner: SshRunner, login_node: LoginNode, job_dir: str
) -> None:
    runner.write_file(f"{job_dir}/sub/f.txt", b"inside")
    runner.write_file(f"{login_node.workdir}/outside/f.txt", b"OUTSIDE")
    opened = runner.open_file(job_dir, ["sub", "f.txt"])
    try:
        assert opened.size == 6 and opened.read(2, 3) == b"sid"
        # the job swaps its parent directory for a link out: the open handle still reads its own file
        swapped = login_node.run_there(f"cd {job_dir} && mv sub sub.old && ln -s ../outside sub")
        assert swapped.returncode == 0, swapped.stderr
        assert opened.read(0, 100) == b"inside" and opened.read(6, 10) == b""
    finally:
        opened.close()
    with pytest.raises(PermissionError, match="links are not followed"):
        runner.open_file(job_dir, ["sub", "f.txt"])  # through the link: refused before it is opened
    login_node.run_there(f"ln -s {login_node.workdir}/outside/f.txt {job_dir}/sub.old/link.txt")
    with pytest.raises(PermissionError, match="links are not followed"):
        runner.open_file(job_dir, ["sub.old", "link.txt"])
    with pytest.raises(FileNotFoundError):
        runner.open_file(job_dir, ["sub.old", "absent.txt"])


def test_a_file_opened_on_a_connection_since_closed_is_unavailable(login_node: LoginNode, job_dir: str) -> None:
    own = SshRunner(login_node.spec("hpc"))
    try:
        own.write_file(f"{job_dir}/f.txt", b"data")
        opened = own.open_file(job_dir, ["f.txt"])
        own.close()
        with pytest.raises(SchedulerUnavailable, match="was closed while a file was read"):
            opened.read(0, 4)
        opened.close()  # quietly
    finally:
        own.close()


def test_fetching_home_refuses_a_link_here_before_making_anything_through_it(
    runner: SshRunner, job_dir: str, tmp_path: Path
) -> None:
    runner.write_file(f"{job_dir}/top.txt", b"top")
    runner.write_file(f"{job_dir}/sub/deeper/f.txt", b"deep")
    here, outside = tmp_path / "here", tmp_path / "outside"
    here.mkdir()
    outside.mkdir()
    (here / "sub").symlink_to(outside)  # planted where the job's directory "sub" comes home
    with pytest.raises(PathRefused, match="symbolic link"):
        bring_home(runner, job_dir, str(here), "job")
    assert list(outside.iterdir()) == []  # nothing made through the link
    (here / "sub").unlink()
    assert bring_home(runner, job_dir, str(here), "job") == 2
    assert (here / "sub/deeper/f.txt").read_bytes() == b"deep" and (here / "top.txt").read_bytes() == b"top"
