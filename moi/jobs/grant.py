"""Who may run code over the web, and where it runs: the server's side of the sandbox.

Running Python or shell over the web is a grant (``moi.web.api`` checks it: an admin,
a user of ``[security] code_users``, or a token made with ``--code``). The server
then decides where the code runs and writes it into the job's call, which only moi
writes (``run_code(kind, cmd, uid, python, network, processes)``), and into its info
(``sandbox``: uid and network; relaunch keeps it, and asks for the grant again). Each
moi user has their own uid from the operator's range ``[security] code_uids``, given
out once and kept in Redis (``Keys.code_uids``), so one user's code cannot signal
another's processes or read their files. No passwd entry is needed: a uid is a number.
It is never one a local account has.
"""

from __future__ import annotations

import base64
import os
import pickle
import pickletools
import pwd
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moi.core.errors import CodeRefused
from moi.core.redact import printable
from moi.core.values import is_whole
from moi.jobs import connections
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

GRANT_NEEDED = (
    "running code needs a grant: an admin, a user listed in [security] code_users, "
    "or a token made with `moi token create --code`"
)
SANDBOX_FIELD = "sandbox"  # of a code job's info: {"uid", "network"}, written by the server


def granted(user: str, admin: bool, token_code: bool) -> bool:
    """Whether ``user`` may run code over the web: an admin, a user of ``code_users``, or a ``--code`` token."""
    return admin or token_code or user in connections.settings().code_user_names


@dataclass(frozen=True)
class Place:
    """Where a user's code runs: as which uid, in which interpreter, with which network (none or host),
    with how many processes at most (0: no limit)."""

    uid: int
    python: str
    network: str
    processes: int = 0


def placement(store: Store, user: str) -> Place:
    """Where ``user``'s code runs; CodeRefused when this moi cannot sandbox code."""
    settings = connections.settings()
    uids = settings.code_uid_range
    if uids is None:
        raise CodeRefused(
            "running code over the web needs [security] code_uids (MOI_CODE_UIDS): "
            "a range of uids no account uses, such as 200000-265535"
        )
    if settings.uses_embedded_cluster and os.geteuid() != 0:  # the embedded runtime's engines run as this server
        raise CodeRefused(
            f"running code over the web needs engines that run as root (to switch to a code uid); "
            f"this server, and so the embedded runtime's engines, run as uid {os.geteuid()}"
        )
    _check_config_closed()
    python = settings.code_python or sys.executable
    return Place(uid_of(store, user, uids), python, settings.code_network, max(0, settings.code_max_processes))


def _check_config_closed() -> None:
    """CodeRefused when other users may read the configuration file (its Redis password, cookie secret and
    SMTP password): a code uid is such another user. Its group may read it: a code uid has no group."""
    path = os.environ.get("MOI_CONFIG_FP")
    if not path:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # the settings were read from it at start: gone since, it holds nothing to read
    if mode & stat.S_IROTH:
        raise CodeRefused(f"code over the web needs the config file {path} closed to other users: chmod o-rwx {path}")


def is_code(info: Mapping[str, Any]) -> bool:
    """Whether a job is code a web user ran (so running it again needs the grant)."""
    return SANDBOX_FIELD in info


def check_relaunch(info: Mapping[str, Any], call: str, web_grant: bool | None) -> None:
    """Whether a job may run again, for a web user who holds the grant to run code or not (``web_grant``;
    None: a local caller, who may relaunch anything). CodeRefused for a web user's code without the
    grant, and for code that ran inside an engine (the CLI's, or a web job from before the sandbox)."""
    if web_grant is None:
        return
    if is_code(info):
        if not web_grant:
            raise CodeRefused(GRANT_NEEDED)
    elif _runs_code_in_process(call):
        raise CodeRefused("this job ran its code inside the engine, not in the sandbox: relaunch it from the CLI")


def _runs_code_in_process(call: str) -> bool:
    """Whether a packed call is moi.compute.text_jobs' python_exec or system_call: read from its pickle's strings,
    never by loading it (that would import whatever module it names)."""
    try:
        buffers, _ = pickle.loads(base64.b64decode(call))  # moi's own wrapping: bytes and tuples
        strings = {str(arg) for _, arg, _ in pickletools.genops(bytes(buffers[0])) if isinstance(arg, str)}
    except Exception:  # not a call moi packed: none of its commands either
        return False
    return "moi.compute.text_jobs" in strings and not strings.isdisjoint({"python_exec", "system_call"})


def uid_of(store: Store, user: str, uids: tuple[int, int]) -> int:
    """``user``'s own uid from the range, given out on first use and kept; never one a local account has."""
    low, high = uids
    with reaching(store.url):
        while True:
            kept = store.redis.hget(store.keys.code_uids, user)
            if kept is not None:
                if not is_whole(kept):
                    raise CodeRefused(f"the uid moi keeps for {printable(user)} in Redis is not a number: remove it")
                return int(kept)
            candidate = low + int(store.redis.incr(store.keys.code_uids_next)) - 1
            if candidate > high:
                raise CodeRefused(f"every uid of [security] code_uids ({low}-{high}) is taken: widen the range")
            if _has_account(candidate):
                continue  # a real account's uid: its files are not for a web user's code
            store.redis.hsetnx(store.keys.code_uids, user, candidate)  # a racing server may have given one first


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
