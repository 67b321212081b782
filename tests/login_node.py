"""A cluster's login node for the tests, reached over SSH, that shares NO filesystem with moi where it matters.

``LoginNode`` is a network namespace of this machine with its own address and an sshd (the pieces of
``tests.hosts``), whose sshd runs in a mount namespace of its own where a tmpfs covers the node's
workdir (``/srv/moi-cluster``): what is written there over SFTP is not on this machine's filesystem,
and what moi writes here is not there. Root logs in with a key pair made for the run, and this machine
checks the node's host key against a known_hosts file made for the run.

``run_there(cmd)`` runs a shell command on the node, in its namespaces (what a test checks is there);
``down()`` takes it off the network (its cable pulled: every packet to it is lost) and ``up()`` brings it back.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moi.core.scheduler_settings import SchedulerSpec
from tests.hosts import SSHD, Host, free_subnet, make_key_pair, reason_no_sshd, write_sshd_config
from tests.processes import stop

WORKDIR = "/srv/moi-cluster"  # on the node only: a tmpfs of its own mount namespace covers it
START_TIMEOUT = 30.0


class LoginNode:
    """``with LoginNode(directory) as node:`` a login node at ``node.address``:22, for ``node.spec(name)``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Its own tag: the hosts fixture of tests.hosts (pid-based tag) may be up at the same time.
        self.host = Host(1, free_subnet(), f"{os.getpid() % 1000:03d}L")
        self.address = self.host.address
        self.port = 22
        self.key = directory / "client_key"  # the client's key pair, trusted by the node's root
        self.known_hosts = directory / "known_hosts"  # the node's host key, as this machine knows it
        self.workdir = WORKDIR
        self.sshd: subprocess.Popen[bytes] | None = None
        self._pid_file = directory / "sshd.pid"

    def __enter__(self) -> LoginNode:
        try:
            self._make_network()
            self._make_keys()
            self._start_sshd()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.host.kill_everything()
        if self.sshd is not None:
            stop(self.sshd)
        self.host.remove_namespace()

    def spec(self, name: str, **more: Any) -> SchedulerSpec:
        """A scheduler context on this node: root, the run's key and known_hosts, its workdir; ``more`` on top."""
        given: dict[str, Any] = {
            "kind": "slurm",
            "host": self.address,
            "user": "root",
            "key": str(self.key),
            "port": self.port,
            "known_hosts": str(self.known_hosts),
            "workdir": self.workdir,
            **more,
        }
        return SchedulerSpec(name, **given)

    def run_there(self, command: str) -> subprocess.CompletedProcess[str]:
        """``sh -c command`` on the node: in its network and mount namespaces (it sees its own workdir)."""
        nsenter = ["nsenter", f"--target={self.sshd_pid()}", "--mount", "--net"]
        return subprocess.run([*nsenter, "sh", "-c", command], capture_output=True, text=True, timeout=60)

    def down(self) -> None:
        """Off the network: its end of the cable goes down, its sshd lives on unreachable (no refusal).

        Its end, not this machine's: this machine's end stays up, without carrier, so that its route to
        the node stays, and what is sent to the node is lost there, never sent by the default route.
        """
        self._link("down")

    def up(self) -> None:
        self._link("up")

    def _link(self, state: str) -> None:
        subprocess.run(["ip", "-n", self.host.namespace, "link", "set", "eth0", state], check=True, capture_output=True)

    def sshd_pid(self) -> int:
        return int(self._pid_file.read_text().split()[0])

    # the parts --------------------------------------------------------------------------------

    def _make_network(self) -> None:
        self.host.make_namespace()
        subnet = self.address.rsplit(".", 1)[0]
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", self.host.veth], check=True, capture_output=True)
        subprocess.run(["ip", "link", "set", self.host.veth, "up"], check=True, capture_output=True)

    def _make_keys(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        make_key_pair(self.key)
        make_key_pair(self.directory / "host_key")
        trusted = self.directory / "authorized_keys"
        trusted.write_text(Path(f"{self.key}.pub").read_text())
        trusted.chmod(0o600)
        host_key = Path(self.directory / "host_key.pub").read_text().split()
        self.known_hosts.write_text(f"{self.address} {host_key[0]} {host_key[1]}\n")

    def _start_sshd(self) -> None:
        config = self.directory / "sshd.conf"
        write_sshd_config(config, self.address, self.directory, self._pid_file)
        log = self.directory / "sshd.log"
        os.makedirs(WORKDIR, exist_ok=True)  # the mount point: empty here, for ever
        # A mount namespace of its own, where a tmpfs covers the workdir: the node's files are its own.
        inside = f"mount -t tmpfs -o mode=0755,size=64m moi-cluster {WORKDIR} && exec {SSHD} -D -f {config} -E {log}"
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.host.namespace, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", inside],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not (self._pid_file.exists() and self._answers()):
            if time.monotonic() > deadline or self.sshd.poll() is not None:
                raise RuntimeError(f"the login node's sshd ({self.address}) did not answer; see {log}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        """Whether its sshd greets: an SSH banner on its port."""
        try:
            with socket.create_connection((self.address, self.port), timeout=2) as connection:
                return connection.recv(4).startswith(b"SSH-")
        except OSError:
            return False


@pytest.fixture(scope="session")
def login_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoginNode]:
    """The session's login node (skipped, with one line, where namespaces or sshd cannot be had; in CI: fails)."""
    from tests.conftest import require

    require(reason_no_sshd(), "login node tests")
    with LoginNode(tmp_path_factory.mktemp("login-node")) as node:
        yield node
