"""A browser's frame read as a request: one verb and its argument, checked before anything acts on it.

Browser -> server, one JSON object per frame: ``{"get": [ids]}``, ``{"log": id}``, ...
(the verbs are in ``moi.relay.verbs``). Anything that is not such an object, or
is larger than a request can be, is refused with BadRequest saying what is wrong.
"""

from __future__ import annotations

from typing import Any

from moi.core import values
from moi.core.errors import BadRequest, InvalidValue

# A request is a verb and a list of ids; anything near this size is not one.
MAX_FRAME = 64 * 1024
MAX_IDS = 1000
MAX_ID_LENGTH = 200


def parse_request(frame: str | bytes) -> tuple[str, Any]:
    """``(verb, argument)`` of a browser frame, or BadRequest saying what is wrong."""
    if isinstance(frame, bytes):
        raise BadRequest("binary frames are not accepted; send JSON text")
    if len(frame) > MAX_FRAME:
        raise BadRequest(f"request too large ({len(frame)} characters; at most {MAX_FRAME})")
    try:
        request = values.loads(frame)
        values.check(request, "")  # what Redis's Lua and JSON cannot hold goes no further (moi.core.values)
    except InvalidValue as error:
        raise BadRequest(str(error)) from None
    except ValueError:
        raise BadRequest("request is not JSON") from None
    except RecursionError:  # "[" * 1000: nested past the parser's depth
        raise BadRequest("request is nested too deeply") from None
    if not isinstance(request, dict) or len(request) != 1:
        raise BadRequest('a request is a JSON object with one verb, like {"get": [ids]}')
    ((verb, argument),) = request.items()
    return verb, argument


def id_list(argument: Any) -> list[str]:
    """The ids of a get/remove request: a list of strings (or one string, as in the seed)."""
    ids = [argument] if isinstance(argument, str) else argument
    if not isinstance(ids, list) or not all(isinstance(node_id, str) for node_id in ids):
        raise BadRequest("ids must be a list of strings")
    if len(ids) > MAX_IDS:
        raise BadRequest(f"too many ids ({len(ids)}; at most {MAX_IDS})")
    if any(len(node_id) > MAX_ID_LENGTH or not node_id for node_id in ids):
        raise BadRequest("an id is empty or too long")
    return list(dict.fromkeys(ids))
