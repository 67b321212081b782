"""Compute: contexts, engines, the worker loop, blocks, shell commands, the sandbox, the dispatcher, the watchdog."""
