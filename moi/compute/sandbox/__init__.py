"""Code that a web user runs (a ``cmd`` job over the API): a fresh interpreter, as an unprivileged uid.

Running Python or shell over the web is a grant: an admin, a user of ``[security] code_users``,
or a token made with ``--code``. Two sides:

- ``moi.jobs.grant``, on the server: who may run code, and where it runs (``placement``): each moi
  user's own uid from ``[security] code_uids``, written into the job's call and its info
  (``sandbox``), which relaunch keeps, asking for the grant again (``check_relaunch``);
- ``child``, on the engine (as root): ``run_code`` runs the code in a fresh interpreter as
  that uid, never in the engine's process nor in a fork of it, with no way to gain privileges,
  at most so many processes, no network by default, in a fresh directory; what it started is
  killed at its end. The child does not import moi: its program (``runner.RUNNER``) is passed
  as source text.

The library and the CLI, run as the machine's own user, run code in-process as before: this is for the web.

Part of the compute layer, it may import the rest of compute and the layers below it (jobfiles, queue,
storage, core). Its modules:

    ``child``        running a web user's code as its uid: the engine's side of the sandbox (``run_code``)
    ``confinement``  the command line that confines a child before it runs the code (``unshare``, ``prlimit``,
                     ``setpriv``)
    ``runner``       the program of a sandboxed Python child, as source text (the child cannot import moi)
"""

from __future__ import annotations

from moi.compute.sandbox.child import MAX_MESSAGE, Repr, real_uid, run_code

__all__ = [
    "MAX_MESSAGE",
    "Repr",
    "real_uid",
    "run_code",
]
