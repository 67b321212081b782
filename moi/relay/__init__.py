"""The live relay: one pub/sub hub per process, a group's subtree, the websocket, bearer tokens."""
