"""The command line that confines a sandboxed child before it runs the code (``moi.compute.sandbox.child``).

Its commands, run as root until they drop to the code's uid: ``unshare`` for a network
namespace of its own (``[security] code_network = none``) and a pid namespace (where the
engine may make one), ``prlimit`` for the uid's processes, then ``setpriv`` to that uid and
its group alone with no way to gain privileges again; each of them dies with its parent.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

from moi.compute import engine
from moi.core.errors import CodeFailed

# A killed engine (SIGKILL, OOM) takes the code it started with it: the kernel sends SIGKILL to a child
# whose parent dies (PR_SET_PDEATHSIG, set by setpriv just before it runs what follows).
DIE_WITH_PARENT = ("--pdeathsig", "KILL")
TOOLS_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"  # where setpriv and unshare (util-linux) are looked for
# unshare's options for a pid namespace: the code's first process is its init, and unshare (the engine's
# child) kills it when it is killed itself; when that init ends, the kernel kills every process left in it.
PID_NAMESPACE = ["--pid", "--fork", "--kill-child"]


def switch(uid: int, network: str, processes: int) -> list[str]:
    """The commands that put what follows them in a network namespace of its own (for network "none") and
    a pid namespace of its own (where the engine may), limit its uid's processes (RLIMIT_NPROC: a fork bomb
    stops there), then run it as ``uid`` and its group alone, never to gain privileges again (a setuid
    program included)."""
    tools = ["setpriv", "unshare"] + (["prlimit"] if processes else [])
    found = {name: shutil.which(name, path=TOOLS_PATH) for name in tools}
    missing = [name for name, path in found.items() if path is None and (name != "unshare" or network == "none")]
    if missing:
        raise CodeFailed(
            f"engine {engine.engine_label()} has no {missing[0]} (util-linux), which sandboxed code needs", "text"
        )
    # --pdeathsig after the uid change (a change of uid clears an earlier one): the code dies with its parent.
    setpriv = str(found["setpriv"])
    drop = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", *DIE_WITH_PARENT, "--"]
    if processes:
        drop = [str(found["prlimit"]), f"--nproc={processes}:{processes}", "--", *drop]
    unshare = found["unshare"]
    if unshare is None:
        return drop
    namespaces = []
    if network == "none":
        if not isolates(unshare, "--net"):
            raise CodeFailed(
                f"engine {engine.engine_label()} cannot give code a network namespace of its own (unshare --net): "
                "give it CAP_SYS_ADMIN, or set [security] code_network = host",
                "text",
            )
        namespaces.append("--net")
    if isolates(unshare, *PID_NAMESPACE):  # when the code's first process ends, the kernel kills the rest
        namespaces += PID_NAMESPACE
    # unshare itself dies with the engine too, and so its namespaces and everything in them.
    return [setpriv, *DIE_WITH_PARENT, "--", unshare, *namespaces, "--", *drop] if namespaces else drop


@functools.cache
def isolates(*isolate: str) -> bool:
    """Whether this engine may make these namespaces (a container without CAP_SYS_ADMIN may not); asked once."""
    try:
        return subprocess.run([*isolate, "--", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
