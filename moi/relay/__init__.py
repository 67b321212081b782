"""The live relay: a user's job tree followed over Redis pub/sub and sent to the browser's websocket.

It may import the layers below it (upkeep, services, jobs, compute, jobfiles, queue, storage, core).
Its modules:

    ``hub``            one shared Redis pub/sub connection per server process
    ``group``          following a group's whole subtree over pub/sub, for one websocket (or anyone)
    ``group_queue``    a ``Group``'s one task, running its work one piece at a time, in order
    ``node_reader``    reading a followed tree from Redis: nodes' infos and groups' children, bad keys left out
    ``node_removal``   removing nodes from Redis, and announcing it: the one place that does
    ``websocket``      the websocket handler: a user's live job tree, from Redis to ``moi.js``
    ``frames``         a browser's frame read as a request: one verb and its argument, checked
    ``verbs``          what a browser may ask of its socket: one verb per frame, on the user's own tree
    ``outbound``       frames from the server to the browser, and the bound on output not yet read
    ``token_watch``    a socket opened with a Bearer token lives no longer than its token
    ``closing_tasks``  work a closed socket leaves behind, run to its end
    ``bearer``         ``Authorization: Bearer <token>`` on the websocket and a job's files
"""
