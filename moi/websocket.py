"""Public: the websocket relay (``moi.relay.websocket``); mount ``MOIMessageHandler`` in a Tornado application."""

from __future__ import annotations

from moi.core.keys import user_name_problem
from moi.relay.frames import MAX_FRAME, MAX_ID_LENGTH, MAX_IDS, id_list, parse_request
from moi.relay.outbound import CLOSE_POLICY, MAX_UNSENT, UNSENT_SETTING, UNSENT_TIMEOUT, UNSENT_TIMEOUT_SETTING
from moi.relay.token_watch import MAX_TIMER, TokenWatch
from moi.relay.websocket import (
    HARD_FRAME_LIMIT,
    HUB_SETTING,
    MAX_SOCKETS,
    PING_INTERVAL,
    SOCKETS_SETTING,
    MOIMessageHandler,
    cookie_user,
    hub_for,
    open_sockets,
    user_group,
)

__all__ = [
    "user_name_problem",
    "CLOSE_POLICY",
    "HARD_FRAME_LIMIT",
    "HUB_SETTING",
    "MAX_FRAME",
    "MAX_IDS",
    "MAX_ID_LENGTH",
    "MAX_SOCKETS",
    "MAX_TIMER",
    "MAX_UNSENT",
    "MOIMessageHandler",
    "PING_INTERVAL",
    "SOCKETS_SETTING",
    "TokenWatch",
    "UNSENT_SETTING",
    "UNSENT_TIMEOUT",
    "UNSENT_TIMEOUT_SETTING",
    "cookie_user",
    "hub_for",
    "id_list",
    "open_sockets",
    "parse_request",
    "user_group",
]
