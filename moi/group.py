"""Public: following a group's subtree live (``moi.relay.group``), and the original moi's
helpers where it kept them: ``get_id_from_user``, ``get_user_from_id``, ``create_info``."""

from __future__ import annotations

from moi.jobs.compat import (
    create_info,
    get_id_from_user,
    get_user_from_id,
)
from moi.relay.group import (
    FORWARD_BURST,
    Callback,
    Group,
    Problem,
)
from moi.relay.node_removal import remove_nodes

__all__ = [
    "Callback",
    "FORWARD_BURST",
    "Group",
    "Problem",
    "create_info",
    "get_id_from_user",
    "get_user_from_id",
    "remove_nodes",
]
