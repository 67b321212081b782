"""The ``pam`` login method: the machine's Unix accounts, through PAM (``pamela``, as JupyterHub does).

The PAM service is ``[server] pam_service`` (``/etc/pam.d/login`` by default). It authenticates
the password and then checks the account (``pam_acct_mgmt``): an account locked or expired
fails the first already, like a wrong password (PAM does not tell them apart, and moi tells an
anonymous client no more than it does). ``pam_unix`` reads ``/etc/shadow``: ``moi server`` must
run as root or in the ``shadow`` group. A conversation may take seconds (``pam_faildelay``): it
runs in the login checks' bounded pool, never on the event loop.
"""

from __future__ import annotations

import logging

log = logging.getLogger("moi.server")

PAM_NEW_AUTHTOK_REQD = 12

EXPIRED = "This account is locked or has expired; ask this machine's administrator."
NEW_PASSWORD = "This account's password has expired: change it on this machine (passwd), then log in."


def pam_refusal(user: str, password: str, service: str) -> str | None:
    """None when PAM logs ``user`` in with ``password``; otherwise "" (wrong: the common answer) or,
    once the password matched, why the account may not log in. Blocks: run it in a thread."""
    import pamela  # here: only the pam method needs libpam

    if "\0" in user or "\0" in password:
        return ""
    try:
        pamela.authenticate(user, password, service=service, resetcred=0, check=False)
    except pamela.PAMError:
        return ""  # whatever the reason: the answer of a wrong password
    except (OSError, ValueError, TypeError) as error:  # no libpam, say: refused, and the operator told
        log.error("the pam login cannot reach PAM: %s", error)
        return ""
    try:
        pamela.check_account(user, service=service)
    except pamela.PAMError as error:  # the password matched: say why the account may not log in
        return NEW_PASSWORD if error.errno == PAM_NEW_AUTHTOK_REQD else EXPIRED
    return None


def unix_account(user: str) -> bool:
    """Whether ``user`` is an account of this machine (the development login leaves its name alone)."""
    import pwd

    try:
        pwd.getpwnam(user)
    except (KeyError, ValueError):
        return False
    return True
