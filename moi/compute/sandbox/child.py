"""Running a web user's code as its uid: the engine's side of the sandbox (``run_code``).

On the engine (which must run as root to switch uid), ``run_code`` never runs the
code in the engine's own process, nor in a fork of it (its memory holds the Redis
password). It starts a fresh interpreter, ``[security] code_python``, behind the commands of
``moi.compute.sandbox.confinement``:

- as that uid and gid, with no supplementary groups and no way to gain privileges
  again (util-linux's ``setpriv --no-new-privs``: a setuid program gives nothing);
- with at most ``[security] code_max_processes`` processes of that uid at once
  (``prlimit``: a fork bomb stops there);
- with ``[security] code_network = none`` (the default), in a network namespace of its
  own (``unshare --net``) with no interface up, not even loopback: it reaches no address,
  so neither moi's Redis and cluster nor any internal service; ``host`` leaves it the
  engine's network;
- in a new session, with no inherited file descriptors, a minimal environment (PATH,
  HOME, LANG, TMPDIR) and, as its working directory, a fresh directory owned by the
  uid (0700), removed afterwards.

The child does not import moi: ``RUNNER`` (``moi.compute.sandbox.runner``) is passed with ``-I -c``,
reads the job from stdin and writes JSON lines back on its stdout: status texts, then the
result (or its repr) or the traceback. The engine relays them, so the job's info reads as
``python_exec``'s and ``system_call``'s would (``moi.compute.text_jobs``). A shell command is
``/bin/sh -c`` as that uid, with ``[stdout, stderr, returncode]`` as its result, or
CommandFailed.

When the job ends, or the engine's liveness interrupts it (a cancel), every
process of that uid in the child's process group or session gets SIGTERM, then
SIGKILL. Where the engine may make one, the code also runs in a pid namespace of its
own (``unshare --pid --fork --kill-child``): when its first process ends or is killed,
the kernel kills every process left in it, those that left the session too. Without
one, a process that leaves its session (``setsid``) can outlive the job; it still
runs as the user's uid, with nothing of moi's. Code whose engine dies is killed by the
kernel (a parent-death signal).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from moi.compute import engine
from moi.compute.sandbox import confinement
from moi.compute.sandbox.runner import RUNNER
from moi.compute.text_jobs import function_source
from moi.core import values
from moi.core.errors import CodeFailed, CommandFailed, InvalidValue
from moi.jobfiles import removal

log = logging.getLogger("moi.sandbox")

KILL_AFTER = 3.0  # seconds the code's processes get between SIGTERM and SIGKILL
POLL = 0.5  # seconds between looks at a cancel while the engine waits on the child
DRAIN = 0.5  # seconds the output is still read after the child ended (a process it left may hold the pipes)
MAX_OUTPUT = 4 << 20  # bytes of a shell command's stdout and stderr together; past them it is stopped
MAX_MESSAGE = 1 << 20  # bytes of one line the Python child writes back (a status text, its result)
PATH = "/usr/local/bin:/usr/bin:/bin"
SHELL = "/bin/sh"


class Repr:
    """A result JSON cannot hold, as the child's repr of it: stored as ``result_format: repr``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def run_code(
    kind: str,
    cmd: str,
    uid: int,
    python: str,
    network: str = "none",
    processes: int = 0,
    status_update: Callable[[str], None] | None = None,
    moi_context: str | None = None,
    moi_parent_id: str | None = None,
) -> Any:
    """Run ``cmd`` (``kind``: python or system) as ``uid`` in a child process, with no network (``network``
    "none": a network namespace of its own, without even loopback) or the host's ("host"), and at most
    ``processes`` processes of that uid at once (0: no limit); its result, as in-process."""
    if os.geteuid() != 0:
        raise CodeFailed(
            f"engine {engine.engine_label()} runs as uid {os.geteuid()}, not root: it cannot run code as uid {uid}",
            "text",
        )
    switch = confinement.switch(uid, network, processes)
    with _own_directory(uid) as workdir:
        if kind == "system":
            return _system(cmd, uid, switch, workdir)
        job = {"source": function_source(cmd), "context": moi_context, "parent": moi_parent_id}
        return _python(job, uid, switch + [python], workdir, status_update or (lambda text: None))


@contextlib.contextmanager
def _own_directory(uid: int) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="moi-code-")  # 0700
    try:
        os.chown(path, uid, uid)
        yield path
    finally:
        try:
            removal.remove_directory(path)
        except OSError as error:  # a process left behind may still write there: the job's outcome stands
            log.warning("code directory %s not removed: %s", path, error)


def _start(argv: list[str], uid: int, workdir: str, python: str | None = None) -> subprocess.Popen[bytes]:
    """The child: ``argv`` (which begins with ``confinement.switch``'s commands, run as root until they drop
    to ``uid``), alone in its session, with nothing of the engine's but what it is given."""
    try:
        return subprocess.Popen(
            argv,
            umask=0o077,
            start_new_session=True,
            close_fds=True,
            cwd=workdir,
            env={"PATH": PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"},
            stdin=subprocess.PIPE if python else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as error:
        raise CodeFailed(f"cannot start {argv[0]} for uid {uid}: {error.strerror or error}", "text") from None


def _system(cmd: str, uid: int, switch: list[str], workdir: str) -> list[Any]:
    proc = _start([*switch, SHELL, "-c", cmd], uid, workdir)
    try:
        out, err = _communicate(proc)
    finally:
        with engine.shielded():
            _end(proc, uid)
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if proc.returncode != 0:
        raise CommandFailed(cmd, stdout, stderr, proc.returncode)
    return [stdout, stderr, proc.returncode]


def _communicate(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """The shell's stdout and stderr, once it ended: a process it left running (``sleep 9 &``) may hold the
    pipes open, so they are read for DRAIN seconds more, not to their end. CodeFailed past MAX_OUTPUT bytes."""
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    read = {out: bytearray(), err: bytearray()}
    unread = [out, err]
    stop = None  # when reading stops: set once the shell ended
    while unread:
        if stop is None and proc.poll() is not None:
            stop = time.monotonic() + DRAIN
        wait = POLL if stop is None else stop - time.monotonic()  # short waits: a cancel is seen between them
        if wait <= 0:
            break
        ready, _, _ = select.select(unread, [], [], wait)
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            read[fd] += chunk
            if not chunk:
                unread.remove(fd)
        if len(read[out]) + len(read[err]) > MAX_OUTPUT:
            raise CodeFailed(f"the command wrote more than {MAX_OUTPUT} bytes of output: stopped there", "text")
    _wait(proc)
    return bytes(read[out]), bytes(read[err])


def _wait(proc: subprocess.Popen[bytes]) -> None:
    # In short waits, so a cancel raised in this thread (not only by a signal) is seen between them.
    while True:
        try:
            proc.wait(POLL)
            return
        except subprocess.TimeoutExpired:
            continue


def _python(
    job: dict[str, Any], uid: int, python: list[str], workdir: str, status_update: Callable[[str], None]
) -> Any:
    """``python``: the switch, then the interpreter."""
    proc = _start([*python, "-I", "-c", RUNNER], uid, workdir, python[-1])
    try:
        _send_job(proc, job)
        outcome = _relay(proc, status_update)
    finally:
        with engine.shielded():
            _end(proc, uid)
    if "result" in outcome:
        return _storable(outcome["result"])
    if "repr" in outcome:
        return Repr(_text(outcome["repr"]))
    if "error" in outcome:
        raise CodeFailed(_text(outcome["error"]), "traceback")
    raise CodeFailed(_no_outcome(proc, python[-1]), "text")


def _storable(result: Any) -> Any:
    """The child's result, or its repr when Redis's Lua could not read it back (1e999, a lone surrogate,
    an integer past 2**53: the code may write any JSON line, not only what RUNNER sends)."""
    try:
        values.check(result, "the code's result")
    except InvalidValue:
        return Repr(_shown(result))
    return result


def _text(value: Any) -> str:
    """A text from the child, as moi may store it: lone surrogates mended; not a text, its repr."""
    return values.mended(value) if isinstance(value, str) else _shown(value)


def _shown(value: Any) -> str:
    try:
        return repr(value)  # of what JSON gave: escapes lone surrogates, says inf
    except RecursionError:
        return "<a value nested too deep to show>"


def _send_job(proc: subprocess.Popen[bytes], job: dict[str, Any]) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # the child died first: its stderr says why
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()


def _relay(proc: subprocess.Popen[bytes], status_update: Callable[[str], None]) -> dict[str, Any]:
    """Status texts passed on as they come; the outcome (result, repr or error); {} when the child gave none."""
    assert proc.stdout is not None
    for message in _messages(proc, proc.stdout.fileno()):
        if "status" in message:
            status_update(_text(message["status"]))
        else:
            return message
    return {}


def _messages(proc: subprocess.Popen[bytes], fd: int) -> Iterator[dict[str, Any]]:
    """The child's JSON lines, until it closes them or ends; a line that is not one of its messages is skipped."""
    pending = bytearray()
    while True:
        ready, _, _ = select.select([fd], [], [], POLL)  # short waits: see _communicate
        if not ready:
            if proc.poll() is not None:
                return  # it ended and wrote nothing more: what holds the pipe open is a process it left
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        pending += chunk
        if b"\n" not in chunk:
            _bound(len(pending))
            continue  # a long line still coming: not searched again for each piece
        *lines, last = bytes(pending).split(b"\n")
        pending = bytearray(last)
        _bound(max(len(pending), *map(len, lines)))
        for line in lines:
            message = _message(line)
            if message is not None:
                yield message


def _bound(line: int) -> None:
    if line > MAX_MESSAGE:  # the child is stopped (by _python's _end): the engine keeps no more of it
        raise CodeFailed(f"the code wrote a line of more than {MAX_MESSAGE} bytes to moi: stopped there", "text")


def _message(line: bytes) -> dict[str, Any] | None:
    try:
        message = values.loads(line)
    except (ValueError, RecursionError, InvalidValue):  # not JSON, nested past the parser, NaN or Infinity
        return None
    return message if isinstance(message, dict) and len(message) == 1 else None


def _no_outcome(proc: subprocess.Popen[bytes], python: str) -> str:
    assert proc.stderr is not None
    readable, _, _ = select.select([proc.stderr], [], [], 0)  # never wait on a pipe a left process holds
    said = os.read(proc.stderr.fileno(), 4096).decode(errors="replace").strip().splitlines() if readable else []
    why = f": {said[-1]}" if said else ""
    return (
        f"the code ended without a result (exit status {proc.returncode}){why}; "
        f"if {python} cannot run here, set [security] code_python (MOI_CODE_PYTHON)"
    )


def _end(proc: subprocess.Popen[bytes], uid: int) -> None:
    """Nothing the code started outlives it: its group and session get SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        _signal_all(proc, uid, signal.SIGTERM)
        try:
            proc.wait(KILL_AFTER)
        except subprocess.TimeoutExpired:
            log.info("code of uid %d (pid %d) ignored SIGTERM; killing it", uid, proc.pid)
    _signal_all(proc, uid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + KILL_AFTER
    while _members(proc.pid, uid) and time.monotonic() < deadline:  # killed ones go as the kernel reaps them
        time.sleep(0.05)


def _signal_all(proc: subprocess.Popen[bytes], uid: int, signum: signal.Signals) -> None:
    if proc.returncode is None:  # not reaped yet, so its group is still the code's (setpriv may not have run yet)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
    _signal_members(proc.pid, uid, signum)


def _signal_members(leader: int, uid: int, signum: signal.Signals) -> None:
    for pid in _members(leader, uid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _members(leader: int, uid: int) -> list[int]:
    """The live processes of ``uid`` in the process group or session that ``leader`` began (from /proc)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if real_uid(int(name)) != uid:
                continue
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rpartition(b")")[2].split()
        except OSError:  # gone meanwhile
            continue
        state, group, session = fields[0], int(fields[2]), int(fields[3])
        if state != b"Z" and leader in (group, session):
            found.append(int(name))
    return found


def real_uid(pid: int) -> int:
    """The real uid of process ``pid``, from /proc/PID/status: the owner of /proc/PID is root for a process
    that made itself non-dumpable (prctl PR_SET_DUMPABLE 0), so it cannot tell. OSError when it is gone."""
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"Uid:"):
                return int(line.split()[1])
    raise ProcessLookupError(pid)
