"""A test cluster of hosts on this machine: network namespaces, each with its own address and sshd.

``Hosts`` makes, for one test session (or one benchmark run), and tears down after it:

- a bridge on the main host (``10.237.N.1``) and, per host, a network namespace joined
  to it by a veth pair (``10.237.N.11``, ``.12`` ...), with its own hostname (a UTS
  namespace) so that each engine reports the host it runs on;
- an ``sshd`` per host, trusting a key pair made for the run;
- moi's Redis on the bridge address, with a password (the hosts reach it there), and
  with ``tls=True`` over TLS only, its certificate made for the run;
- an ipyparallel cluster whose controller listens on the bridge address and whose
  engines ipyparallel's SSH engine launcher starts on the hosts.

The hosts share this machine's filesystem, so they run the same Python and moi. It needs
root, ``ip`` (iproute2), ``unshare`` and openssh-server (installed from Debian's package
when missing); ``reason_unavailable()`` says in one line why it cannot run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from moi.storage.redis_server import start_redis
from tests.certs import make_tls_files, reason_no_tls_redis
from tests.processes import stop

ROOT = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"
CLUSTER_ID = "hosts"


def reason_unavailable() -> str | None:
    """None when namespaces, sshd, ssh and a TLS Redis can be had here; otherwise one line saying why not."""
    return reason_no_sshd() or reason_no_tls_redis()


def reason_no_sshd() -> str | None:
    """None when network namespaces, sshd and ssh can be had here; otherwise one line saying why not."""
    if os.geteuid() != 0:
        return "the multi-host tests need root (network namespaces, sshd)"
    for tool in ("ip", "unshare", "nsenter", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"the multi-host tests need {tool}: install iproute2, util-linux and openssh-client"
    if not os.path.exists(SSHD) and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "openssh-server"], capture_output=True, check=False)
    if not os.path.exists(SSHD):
        return f"the multi-host tests need {SSHD}: apt-get install -y openssh-server"
    probe = f"moi-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces cannot be made here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def make_key_pair(path: Path) -> None:
    """An ed25519 key pair with no passphrase: ``path`` and ``path.pub``."""
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path))


def write_sshd_config(config: Path, address: str, directory: Path, pid_file: Path) -> None:
    """An sshd's configuration: on ``address``:22, root logs in with a key of ``directory``/authorized_keys."""
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {address}:22",
                f"HostKey {directory / 'host_key'}",
                f"AuthorizedKeysFile {directory / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "Subsystem sftp internal-sftp",  # scp speaks sftp: the launcher sends connection files
                f"PidFile {pid_file}",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory


def free_subnet() -> int:
    """A 10.237.N.0/24 no interface of this machine uses (another run of the tests may hold one)."""
    used = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout
    for _ in range(100):
        number = secrets.randbelow(250) + 1
        if f"10.237.{number}." not in used:
            return number
    raise RuntimeError("no free 10.237.N.0/24 subnet for the test hosts")


class Host:
    def __init__(self, index: int, subnet: int, tag: str) -> None:
        self.name = f"moi-host{index}"  # its hostname, as its engines report it
        self.namespace = f"moi-{tag}-h{index}"
        self.veth = f"moi{tag}v{index}"
        self.address = f"10.237.{subnet}.{10 + index}"
        self.sshd: subprocess.Popen[bytes] | None = None
        self.reachable = True  # until its link is cut or it is killed

    def pids(self) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True).stdout
        return [int(pid) for pid in listed.split()]

    def cut_link(self) -> None:
        """The host's cable pulled: its end of the bridge goes down, and its processes live on unreachable."""
        _run("ip", "link", "set", self.veth, "down")
        self.reachable = False

    def mend_link(self) -> None:
        """The cable plugged back in."""
        _run("ip", "link", "set", self.veth, "up")
        self.reachable = True

    def make_namespace(self) -> None:
        """Its network namespace, joined to this machine by a veth pair: ``veth`` here, ``eth0`` there."""
        _run("ip", "netns", "add", self.namespace)
        _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.namespace)
        _run("ip", "-n", self.namespace, "addr", "add", f"{self.address}/24", "dev", "eth0")
        _run("ip", "-n", self.namespace, "link", "set", "eth0", "up")
        _run("ip", "-n", self.namespace, "link", "set", "lo", "up")

    def remove_namespace(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.namespace], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.veth], capture_output=True)

    def kill_everything(self) -> None:
        """SIGKILL every process in the host (its engines, sshd): the host died."""
        self.reachable = False
        for pid in self.pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Hosts:
    """``with Hosts(2, directory) as hosts:`` the hosts, their Redis and a cluster with engines on each."""

    def __init__(self, count: int, directory: Path, engines_per_host: int = 1, tls: bool = False) -> None:
        self.directory = directory
        self.tls = tls  # moi's Redis speaks TLS only (rediss://), with a certificate made for the run
        self.tag = f"{os.getpid() % 1000:03d}"
        self.subnet = free_subnet()
        self.bridge = f"moi{self.tag}br"
        self.main_address = f"10.237.{self.subnet}.1"
        self.hosts = [Host(index + 1, self.subnet, self.tag) for index in range(count)]
        self.engines_per_host = engines_per_host
        self.key = directory / "id_ed25519"
        self.redis_url = ""
        self.url_file = ""
        self.cluster: Any = None
        self._stack = ExitStack()

    # the whole --------------------------------------------------------------------

    def __enter__(self) -> Hosts:
        try:
            self._make_network()
            self._make_keys()
            for host in self.hosts:
                self._start_sshd(host)
            self._start_redis()
            self._start_cluster()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cluster is not None:  # first, or their threads would ssh to hosts being killed, and raise
            _stop_watching(self.cluster)
        for host in self.hosts:  # the engines die with their hosts: nothing is left to stop over ssh
            host.kill_everything()
        self._stack.close()
        for host in self.hosts:
            host.remove_namespace()
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)

    def env(self) -> dict[str, str]:
        """The environment of a moi process on the main host that uses these hosts' context."""
        return {
            **os.environ,
            "MOI_REDIS_URL": self.redis_url,
            "MOI_CONTEXTS": f"hosts={self.url_file}",
            "MOI_DEFAULT_CONTEXT": "hosts",
            "MOI_STATE_DIR": str(self.directory / "state"),
        }

    # the parts --------------------------------------------------------------------

    def _make_network(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.main_address}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts:
            host.make_namespace()
            _run("ip", "link", "set", host.veth, "master", self.bridge, "up")

    def _make_keys(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        make_key_pair(self.key)
        make_key_pair(self.directory / "host_key")
        trusted = self.directory / "authorized_keys"
        trusted.write_text(Path(f"{self.key}.pub").read_text())
        trusted.chmod(0o600)

    def _start_sshd(self, host: Host) -> None:
        config = self.directory / f"sshd-{host.name}.conf"
        write_sshd_config(config, host.address, self.directory, self.directory / f"sshd-{host.name}.pid")
        log = self.directory / f"sshd-{host.name}.log"
        # -D: in the foreground, so that it is ours to stop; its own UTS namespace gives the host its name.
        host.sshd = subprocess.Popen(
            ["ip", "netns", "exec", host.namespace, "unshare", "--uts", "sh", "-c",
             f"hostname {host.name} && exec {SSHD} -D -f {config} -E {log}"],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self._stack.callback(stop, host.sshd)
        deadline = time.monotonic() + 30
        while subprocess.run([*self.ssh_command(host), "true"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or host.sshd.poll() is not None:
                raise RuntimeError(f"sshd on {host.name} ({host.address}) did not answer; see {log}")
            time.sleep(0.2)

    def ssh_options(self) -> list[str]:
        known = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        # A host whose link is cut drops every packet: without these, an ssh to it (or one already
        # connected, the launchers' watch of an engine) would wait for ever.
        # Lenient enough for a loaded machine: an engine's ssh that gave up would take its engine with it.
        alive = ["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        return ["-i", str(self.key), *known, "-o", "BatchMode=yes", *alive]

    def ssh_command(self, host: Host) -> list[str]:
        return ["ssh", *self.ssh_options(), f"root@{host.address}"]

    def _start_redis(self) -> None:
        tls = make_tls_files(self.directory / "tls", [self.main_address]) if self.tls else None
        proc, self.redis_url = start_redis(
            self.directory / "redis", password=secrets.token_urlsafe(24), address=self.main_address, tls=tls
        )
        self._stack.callback(stop, proc)

    def _start_cluster(self) -> None:
        import ipyparallel as ipp

        cluster = ipp.Cluster(
            profile_dir=str(self.directory / "profile"),
            cluster_id=CLUSTER_ID,
            controller_ip=self.main_address,  # the engines reach the controller over the bridge
            n=self.engines_per_host * len(self.hosts),
            engine_launcher_class="ssh",
            log_level=30,
            engine_timeout=120,  # start_and_connect waits this long (default 60): an ssh engine on a loaded run is slow
            shutdown_atexit=False,  # at exit it would ssh to hosts that are gone, and wait on them
        )
        launcher = cluster.config.SSHEngineSetLauncher
        launcher.engines = {f"root@{host.address}": self.engines_per_host for host in self.hosts}
        launcher.remote_python = sys.executable
        # The hosts share this filesystem: the engines import moi, the tests' and the benchmarks' job functions.
        launcher.environment = {"PYTHONPATH": str(ROOT)}
        launcher.ssh_args = launcher.scp_args = self.ssh_options()
        cluster.config.SSHLauncher.ssh_args = cluster.config.SSHLauncher.scp_args = self.ssh_options()
        # Each engine is watched by an ssh that waits this long on its pid: at teardown, a wait ends this soon.
        cluster.config.SSHLauncher.poll_seconds = 5
        client = cluster.start_and_connect_sync()
        client.wait_for_engines(self.engines_per_host * len(self.hosts), timeout=120)
        client.close()
        self.cluster = cluster
        self._stack.callback(_stop_cluster, cluster)
        self.url_file = str(self.directory / "profile" / "security" / f"ipcontroller-{CLUSTER_ID}-client.json")


def _stop_watching(cluster: Any) -> None:
    """Stop the SSH launchers' threads, which poll each engine over ssh, and wait for them to finish a poll."""
    engine_sets = cluster.engines.values()
    launchers = [launcher for engines in engine_sets for launcher in getattr(engines, "launchers", {}).values()]
    for launcher in launchers:
        stop_waiting = getattr(launcher, "_stop_waiting", None)
        if stop_waiting is not None:
            stop_waiting.set()
    deadline = time.monotonic() + 20  # a watch of a cut-off host ends when ssh finds it unresponsive
    for launcher in launchers:
        thread = getattr(launcher, "_wait_thread", None)
        if thread is not None:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


def _stop_cluster(cluster: Any) -> None:
    """The controller; the engines died with their hosts."""
    _stop_watching(cluster)
    cluster.engines.clear()
    cluster.stop_controller_sync()
