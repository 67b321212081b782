"""What the CLI runs as jobs: shell commands and Python code given as text.

``system_call`` runs a shell command in its own process group, so a cancel ends
everything it started (``end_process_group``, which a service's steps use too);
``python_exec`` runs code as the body of a function, compiled first by ``check_code``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import textwrap
from typing import Any

from moi.compute import engine, time_limits
from moi.core.errors import CommandFailed, InvalidCode

log = logging.getLogger("moi.commands")

_CODE_FILENAME = "<moi-cmd>"
KILL_AFTER = 3.0  # seconds a cancelled shell command gets between SIGTERM and SIGKILL


def system_call(cmd: str, **kwargs: Any) -> list[Any]:
    """Run a shell command; ``[stdout, stderr, returncode]``, or CommandFailed.

    The command runs in its own process group; if the call is interrupted
    (the job is cancelled, or ran past its time limit), the whole group gets SIGTERM, then SIGKILL.
    At the job's soft time limit the group gets SIGTERM alone: the command may trap it and finish.
    """
    with subprocess.Popen(
        cmd,
        shell=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            with time_limits.process_group(proc.pid):  # a soft time limit: SIGTERM, which the command may trap
                stdout, stderr = proc.communicate()
        except BaseException:
            with engine.shielded():
                end_process_group(proc)
            raise
    if proc.returncode != 0:
        raise CommandFailed(cmd, stdout, stderr, proc.returncode)
    return [stdout, stderr, proc.returncode]


def end_process_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM to the command's whole process group; SIGKILL for whatever ignores it."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(KILL_AFTER)
    except subprocess.TimeoutExpired:
        log.info("command %d ignored SIGTERM; killing its process group", proc.pid)
    _signal_group(proc.pid, signal.SIGKILL)  # children may outlive the shell
    proc.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has already gone
        os.killpg(pgid, signum)


def function_source(code: str) -> str:
    """Code as the body of a function, so ``return x`` sets the result."""
    body = textwrap.indent(textwrap.dedent(code), "    ") or "    pass"
    return f"def moi_cmd(**kwargs):\n{body}\n"


def check_code(code: str) -> None:
    try:
        compile(function_source(code), _CODE_FILENAME, "exec")
    except SyntaxError as error:
        line = (error.lineno or 2) - 1  # the first line is our def
        raise InvalidCode(f"Python code does not compile: {error.msg} (line {line})") from None
    except (MemoryError, RecursionError):  # the parser's own limits: 10,000 minus signs in a row
        raise InvalidCode("Python code does not compile: it is nested too deeply for the parser") from None


def python_exec(code: str, **kwargs: Any) -> Any:
    """Run code given as text (``moi submit --cmd``) as the body of a function."""
    namespace: dict[str, Any] = {}
    exec(compile(function_source(code), _CODE_FILENAME, "exec"), namespace)
    return namespace["moi_cmd"](**kwargs)
