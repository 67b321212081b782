"""Job files: a directory per job, inputs checked and fetched, outputs read back, the log tail."""
