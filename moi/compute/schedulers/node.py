"""A Python function job on a cluster's node: ``python -m moi.compute.schedulers.node DIRECTORY``.

Run by a scheduler job's script (``moi.compute.schedulers.script``) with the cluster's ``python``, which has moi.
It loads the job's packed call from ``.moi/call``, calls it in the job's directory, and writes how it went to
``.moi/outcome.json``: the return value as the job's result (JSON, or its repr with the pickled value), or the
traceback. ``status_update`` texts go to ``.moi/status``. Nothing here reaches Redis: the poller reads these files
(over SFTP when the cluster shares no filesystem) as the job ends. The exit code is 0 on success, 1 on failure.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from moi.compute import arguments
from moi.compute.running import pickled
from moi.compute.schedulers import script
from moi.core.info import encode_result
from moi.queue.jobqueue import item_arguments, unpack_call


def run(directory: str) -> int:
    """Call the job's function in ``directory``; its outcome written there. The exit code."""
    os.chdir(directory)
    status_file = script.path(directory, script.STATUS)

    def status_update(text: str) -> None:
        with open(status_file + ".tmp", "w") as out:
            out.write(str(text)[:1000])
        os.replace(status_file + ".tmp", status_file)

    try:
        func, args, kwargs = _call(directory)
        moi_names = arguments.moi_kwargs(arguments.accepted(func), status_update, {}, directory)
        returned = func(*args, **{**kwargs, **moi_names})
        value, result_format = encode_result(returned)
        outcome: dict[str, Any] = {"status": "Success", "result": value, "result_format": result_format}
        if result_format == "repr":  # kept pickled too, so that a handle's get() returns the object itself
            outcome["value"] = pickled(returned)
    except Exception as error:
        outcome = {"status": "Failed", "result": traceback.format_exc(), "result_format": "traceback"}
        outcome["value"] = pickled(error)
    _write(script.path(directory, script.OUTCOME), outcome)
    return 0 if outcome["status"] == "Success" else 1


def _call(directory: str) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """The job's function and arguments: its call, or its batch's with its own arguments (``item``)."""
    with open(script.path(directory, script.CALL)) as source:
        func, args, kwargs, _ = unpack_call(source.read())
    item = script.path(directory, script.ITEM)
    if os.path.exists(item):
        with open(item) as source:
            args = item_arguments(source.read())
    return func, args, kwargs


def _write(path: str, outcome: dict[str, Any]) -> None:
    with open(path + ".tmp", "w") as out:
        json.dump(outcome, out)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
