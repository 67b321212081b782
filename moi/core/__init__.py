"""Core: moi's names and data (errors, keys, Lua scripts, the info object, values, settings).

The bottom layer: it imports nothing of moi's. Its modules:

    ``errors``          the one exception hierarchy of moi
    ``keys``            every Redis key and pub/sub channel name moi uses
    ``lua``             the Lua scripts through which moi changes the tree: each one atomic step
    ``info``            the info object: the JSON document kept in Redis for every job and group
    ``values``          values that reach Redis's Lua and JSON, checked where they enter
    ``config``          settings: defaults, an INI file, the environment and ``moi.configure``
    ``files_settings``  the ``[files]`` settings as text: lists, ``fetch_allow`` rules, paths under a root
    ``redact``          text that is safe to show: URLs without their password, text without control characters
"""
