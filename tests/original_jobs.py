"""Job functions written the way Qiita writes them for the original moi (importable on engines)."""

from __future__ import annotations

import time
from pathlib import Path


def run_analysis(analysis_id, cmds, depth=3, moi_update_status=None, moi_context=None, moi_parent_id=None):
    """Qiita's shape: the three moi_* names declared, progress through moi_update_status, no **kwargs.

    Waits for ``<release>`` to exist when cmds names one, so a test can watch it running.
    """
    moi_update_status(f"Running analysis {analysis_id} at depth {depth}")
    release = cmds.get("release") if isinstance(cmds, dict) else None
    while release and not Path(release).exists():
        time.sleep(0.05)
    if cmds == "fail":
        raise ValueError(f"analysis {analysis_id} failed")
    return {"analysis": analysis_id, "context": moi_context, "parent": moi_parent_id}


def plain_add(a, b):
    """No **kwargs and none of moi's names: moi passes it only its own arguments."""
    return a + b


def only_status(steps, status_update):
    """Declares status_update alone."""
    for step in range(steps):
        status_update(f"step {step + 1}")
    return steps
