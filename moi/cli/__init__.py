"""The ``moi`` command: the CLI layer, one module per command family, gathered by ``main``.

It may import every layer below it (web, relay, upkeep, services, jobs, compute, jobfiles, queue, storage,
core); only the facade ``moi.__main__`` imports it. Its modules:

    ``main``      the ``moi`` command: one click group, whose commands the family modules define, and one-line errors
    ``submit``    ``moi submit``: one job (``--cmd``), or one job per line of a file (``--each``), as one batch
    ``jobs``      ``moi job``, ``userjobs``, ``users``, ``cancel``, ``relaunch``, ``pause`` and ``resume``
    ``operate``   ``moi status``, ``watchdog``, ``down`` and ``server``: running moi, and what runs where
    ``files``     ``moi files`` and ``moi download``: a job's files from a terminal
    ``services``  ``moi run``, ``moi services`` and ``moi resubmit``: services from a terminal
    ``tokens``    ``moi token create|list|revoke``: API tokens from a terminal
    ``output``    what the command prints and how it exits (statuses a script can tell apart)
    ``__main__``  ``python -m moi.cli``, as before the layers
"""

from moi.cli.main import main
from moi.cli.output import format_info, wait_for

__all__ = ["format_info", "main", "wait_for"]
