"""Names and data: errors, keys, Lua scripts, the info object, values, settings. Imports nothing of moi's."""
