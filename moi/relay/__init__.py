"""The live relay: one pub/sub hub per process (``hub``); a group's subtree followed (``group``, run by
``worker``, read by ``reading``, removed by ``removal``); the websocket (``websocket``, with ``frames``,
``verbs``, ``output``, ``token_watch``, ``background``); bearer tokens (``bearer``)."""
