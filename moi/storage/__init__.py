"""Storage: Redis clients and the embedded Redis server, the store (the one writer of job state), tokens,
retention, tallies, loop failures, and this process's settings and store (``process``)."""
