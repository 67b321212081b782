"""How often an engine beats for its jobs, and how long a beat lives.

A running job's heartbeat key lives ``HEARTBEAT_TTL`` seconds and is refreshed every ``HEARTBEAT_INTERVAL``
(``moi.compute.engine``); the watchdog fails a job whose heartbeat stays gone (``moi.compute.watchdog``).

``MOI_HEARTBEAT_TTL``, in an engine's environment, shortens (or lengthens) that life: the test suite sets it
so that a killed engine's job is failed seconds sooner. Unset, as in production, the life is ``HEARTBEAT_TTL``
exactly. It is read where the engine writes a heartbeat, so it must be set where the engines start; a shorter
life also lets a busy engine whose beats are held up for that long (plus the watchdog's grace) be taken for a
dead one, so it never goes under ``MIN_HEARTBEAT_TTL``: two beats, one of which may be late.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger("moi.engine")

HEARTBEAT_INTERVAL = 1.0  # seconds between beats, and so between looks at the cancel flag
HEARTBEAT_TTL = 10  # seconds a heartbeat lives: an engine silent this long is lost
MIN_HEARTBEAT_TTL = 2  # seconds: 2 * HEARTBEAT_INTERVAL, so one late beat alone never lets the key expire
TTL_VARIABLE = "MOI_HEARTBEAT_TTL"


def heartbeat_ttl() -> int:
    """Seconds a heartbeat this engine writes lives: ``MOI_HEARTBEAT_TTL`` if set, else ``HEARTBEAT_TTL``."""
    return _ttl_of(os.environ.get(TTL_VARIABLE, ""))


@functools.cache
def _ttl_of(text: str) -> int:
    """The life ``text`` asks for (once per value: an engine beats every second), within the bounds."""
    if not text:
        return HEARTBEAT_TTL
    try:
        asked = int(text)
    except ValueError:
        log.warning("%s=%r is not a whole number of seconds; heartbeats live %ss", TTL_VARIABLE, text, HEARTBEAT_TTL)
        return HEARTBEAT_TTL
    if asked < MIN_HEARTBEAT_TTL:
        log.warning(
            "%s=%s is under %ss; heartbeats live %ss", TTL_VARIABLE, asked, MIN_HEARTBEAT_TTL, MIN_HEARTBEAT_TTL
        )
    return max(asked, MIN_HEARTBEAT_TTL)
