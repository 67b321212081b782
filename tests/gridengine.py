"""A one-host Grid Engine cell on this machine, made for one test session and torn down after it.

``GridEngine(directory)`` makes a cell of its own under ``directory`` (its own ``SGE_ROOT``,
classic spooling, its own qmaster and execd ports), starts ``sge_qmaster`` and ``sge_execd``
in the foreground (``SGE_ND``), makes this host admin, submit and execution host, adds the
parallel environment ``smp`` and the queue ``all.q`` and waits until the queue takes jobs.
Grid Engine's commands (``qsub``, ``qstat``, ``qdel``, ``qacct``) reach the cell through the
variables ``env()`` sets. Jobs run as root: the cell's ``min_uid``/``min_gid`` are 0.

It needs root and Debian's ``gridengine-master``, ``gridengine-exec`` and ``gridengine-client``
(installed when missing, with debconf told not to make Debian's own cell);
``reason_unavailable()`` says in one line why it cannot run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from moi.storage.redis_server import free_port
from tests.processes import stop

PACKAGES = ("gridengine-master", "gridengine-exec", "gridengine-client")
BINARIES = Path(
    "/usr/lib/gridengine"
)  # Debian's daemons and spool tools; /usr/bin/q* are wrappers that honour SGE_ROOT
DEBIAN_ROOT = Path("/var/lib/gridengine")  # holds the bin, utilbin, lib and util links a SGE_ROOT needs
RESOURCES = Path("/usr/share/gridengine/util/resources")
CELL = "default"
QUEUE = "all.q"
PE = "smp"

# debconf's answers: no cell made by the packages (we make our own), so nothing asks and nothing starts.
PRESEED = """\
gridengine-common shared/gridengineconfig boolean false
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string localhost
"""


def reason_unavailable() -> str | None:
    """None when a Grid Engine cell can be started here; otherwise one line saying why not."""
    if os.geteuid() != 0:
        return "the Grid Engine tests need root (the cell's daemons and jobs run as root here)"
    if not _installed() and shutil.which("apt-get"):
        subprocess.run(["debconf-set-selections"], input=PRESEED, text=True, capture_output=True, check=False)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", *PACKAGES]
        subprocess.run(argv, env=env, capture_output=True, check=False)
        _stop_debian_daemons()
    if not _installed():
        return f"the Grid Engine tests need Debian's {' '.join(PACKAGES)}: apt-get install -y {' '.join(PACKAGES)}"
    return None


def _stop_debian_daemons() -> None:
    """Stop what the packages' init scripts started for Debian's own cell, which we leave unmade.

    Where no policy-rc.d forbids it (a fresh CI machine), installing starts an ``sge_execd`` that
    stays, retrying a qmaster that never comes. Those processes are told apart from any cell of
    ours by their ``SGE_ROOT``: Debian's, ``/var/lib/gridengine``.
    """
    for proc in Path("/proc").iterdir():
        with suppress(OSError, ValueError):
            if Path(os.readlink(proc / "exe")).parent != BINARIES:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
            if f"SGE_ROOT={DEBIAN_ROOT}".encode() in environ:
                os.kill(int(proc.name), signal.SIGKILL)


def _installed() -> bool:
    needed = [BINARIES / name for name in ("sge_qmaster", "sge_execd", "spoolinit", "spooldefaults")]
    return all(path.exists() for path in needed) and all(shutil.which(name) for name in ("qsub", "qconf"))


class GridEngine:
    """``with GridEngine(directory) as cell:`` sge_qmaster and one sge_execd; queue ``all.q`` with ``slots`` slots."""

    def __init__(self, directory: Path, slots: int = 4) -> None:
        self.directory = directory
        self.slots = slots
        self.root = directory / "root"
        self.common = self.root / CELL / "common"
        self.spool = directory / "spool"
        self.qmaster_port, self.execd_port = free_port(), free_port()
        self.host = _loopback_name()  # the name qmaster gives every client here, since all connect from 127.0.0.1
        self.daemons: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> GridEngine:
        try:
            self._make_cell()
            self._start("sge_qmaster")
            self._wait_for(self._qmaster_answers, "sge_qmaster did not answer")
            self._configure()
            self._start("sge_execd")
            self._wait_for(self._queue_open, f"queue {QUEUE} did not open")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Every job of this cell deleted (its processes die with it), then the daemons, execd first."""
        if self.daemons and self.daemons[0].poll() is None:
            with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self.run("qdel", "-f", "-u", "*")
            deadline = time.monotonic() + 30
            while self.job_ids() and time.monotonic() < deadline:
                time.sleep(0.5)
        for proc in reversed(self.daemons):
            # execd first, within seconds; qmaster's controlled shutdown takes 7 s here, and the cell
            # (its spool included) is thrown away, so it gets SIGKILL after 1 s.
            stop(proc, 20 if proc is not self.daemons[0] else 1)
        self.daemons.clear()

    def env(self) -> dict[str, str]:
        """The environment in which Grid Engine's commands use this cell."""
        return {
            **os.environ,
            "SGE_ROOT": str(self.root),
            "SGE_CELL": CELL,
            "SGE_QMASTER_PORT": str(self.qmaster_port),
            "SGE_EXECD_PORT": str(self.execd_port),
        }

    def run(self, *argv: str) -> str:
        """A Grid Engine command's output (``qsub``, ``qstat``, ``qdel``, ``qacct`` ...) against this cell."""
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, check=True, timeout=60).stdout

    def job_ids(self, name: str | None = None) -> list[str]:
        """The ids of this cell's jobs not yet ended (every user's), those named ``name`` only when it is given."""
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired, ElementTree.ParseError):
            jobs = ElementTree.fromstring(self.run("qstat", "-u", "*", "-xml")).iter("job_list")
            return [job.findtext("JB_job_number", "") for job in jobs if name in (None, job.findtext("JB_name"))]
        return []

    def _make_cell(self) -> None:
        """SGE_ROOT with Debian's binaries linked in, a bootstrap, the spool made as Debian's init_cluster does."""
        self.common.mkdir(parents=True)
        (self.spool / "qmaster").mkdir(parents=True)
        (self.spool / "execd").mkdir()
        for name in ("bin", "utilbin", "lib", "util"):
            (self.root / name).symlink_to(DEBIAN_ROOT / name)
        (self.common / "bootstrap").write_text(self._bootstrap())
        (self.common / "act_qmaster").write_text(self.host + "\n")
        # Every name of this host is the one qmaster sees clients come from; else it refuses them
        # ("client IP resolved to host name localhost. This is not identical to clients host name vm").
        aliases = dict.fromkeys([self.host, socket.gethostname(), socket.getfqdn()])
        (self.common / "host_aliases").write_text(" ".join(aliases) + "\n")
        (self.directory / "global.conf").write_text(self._global_configuration())
        spool_params = f"{self.common};{self.spool / 'qmaster'}"
        self._tool("spoolinit", "classic", "libspoolc", spool_params, "init")
        self._tool("spooldefaults", "configuration", str(self.directory / "global.conf"))
        self._tool("spooldefaults", "complexes", str(RESOURCES / "centry"))
        self._tool("spooldefaults", "usersets", str(RESOURCES / "usersets"))
        self._tool("spooldefaults", "managers", "root")

    def _bootstrap(self) -> str:
        settings = {
            "admin_user": "none",  # the daemons stay root, who starts them
            "default_domain": "none",
            "ignore_fqdn": "true",
            "spooling_method": "classic",  # plain files: no Berkeley DB environment to lock
            "spooling_lib": "libspoolc",
            "spooling_params": f"{self.common};{self.spool / 'qmaster'}",
            "binary_path": BINARIES,
            "qmaster_spool_dir": self.spool / "qmaster",
            "security_mode": "none",
            "listener_threads": 2,
            "worker_threads": 2,
            "scheduler_threads": 1,
        }
        return "".join(f"{name} {value}\n" for name, value in settings.items())

    def _global_configuration(self) -> str:
        """Debian's default global configuration, for this cell: its spool, root's jobs allowed, accounting flushed."""
        changes = {
            "execd_spool_dir": str(self.spool / "execd"),
            "min_uid": "0",  # the tests' jobs run as root; Grid Engine refuses uids below min_uid (1000 in Debian's)
            "min_gid": "0",
            "mailer": "/bin/true",
            "load_report_time": "00:00:05",
            "reporting_params": "accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00",
        }
        return _with_values(Path("/usr/share/gridengine/default-configuration").read_text(), changes)

    def _configure(self) -> None:
        """This host as submit and execution host, the scheduler quick, the PE ``smp`` and the queue."""
        self.run("qconf", "-as", self.host)
        self._load("-Msconf", "sched.conf", _with_values(self.run("qconf", "-ssconf"), SCHEDULER))
        self._load("-Ap", "pe.conf", PE_CONF)
        self._load("-Ae", "host.conf", EXEC_HOST.format(host=self.host))
        queue = {"qname": QUEUE, "hostlist": self.host, "slots": str(self.slots), "pe_list": PE, "shell": "/bin/sh"}
        self._load("-Aq", "queue.conf", _with_values(self.run("qconf", "-sq"), {**queue, "load_thresholds": "NONE"}))

    def _load(self, option: str, name: str, text: str) -> None:
        path = self.directory / name
        path.write_text(text)
        self.run("qconf", option, str(path))

    def _tool(self, name: str, *argv: str) -> None:
        subprocess.run([str(BINARIES / name), *argv], env=self.env(), capture_output=True, check=True, timeout=60)

    def _start(self, daemon: str) -> None:
        """``daemon`` in the foreground (SGE_ND), so that it is ours to stop; its output in ``<daemon>.out``."""
        with open(self.directory / f"{daemon}.out", "wb") as output:
            # without the test session's moi settings: a cluster's daemons have none, and a job gets theirs too
            env = {name: value for name, value in self.env().items() if not name.startswith("MOI_")}
            env["SGE_ND"] = "1"
            argv = [str(BINARIES / daemon)]
            self.daemons.append(subprocess.Popen(argv, stdout=output, stderr=output, env=env, cwd=self.directory))

    def _qmaster_answers(self) -> bool:
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return bool(self.run("qconf", "-sh"))
        return False

    def _queue_open(self) -> bool:
        """The queue instance reports load and has no state (``u`` unknown, ``a`` alarm, ``d`` disabled ...)."""
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired, ElementTree.ParseError):
            queues = list(ElementTree.fromstring(self.run("qstat", "-f", "-q", QUEUE, "-xml")).iter("Queue-List"))
            return bool(queues) and all(not queue.findtext("state") for queue in queues)
        return False

    def _wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not ready():
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in self.daemons):
                raise RuntimeError(f"{what}; see {self.directory}/*.out and {self.spool}/*/messages")
            time.sleep(0.3)


def _loopback_name() -> str:
    """What 127.0.0.1 resolves to (``localhost`` on Debian): the host name qmaster checks clients against."""
    with suppress(OSError):
        return socket.gethostbyaddr("127.0.0.1")[0]
    return "localhost"


def _with_values(text: str, values: dict[str, str]) -> str:
    """A Grid Engine ``name value`` configuration with ``values`` replacing the named lines."""
    lines = []
    for line in text.splitlines():
        name = line.split(maxsplit=1)[0] if line.strip() else ""
        lines.append(f"{name} {values[name]}" if name in values else line)
    return "\n".join(lines) + "\n"


# The scheduler runs every second and on each submit and end, rather than every 15 s.
SCHEDULER = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"}

# ``-pe smp N``: N slots on one host.
PE_CONF = """\
pe_name smp
slots 999
user_lists NONE
xuser_lists NONE
start_proc_args NONE
stop_proc_args NONE
allocation_rule $pe_slots
control_slaves FALSE
job_is_first_task TRUE
urgency_slots min
accounting_summary FALSE
qsort_args NONE
"""

EXEC_HOST = """\
hostname {host}
load_scaling NONE
complex_values NONE
user_lists NONE
xuser_lists NONE
projects NONE
xprojects NONE
usage_scaling NONE
report_variables NONE
"""
