"""Jobs as the Python API makes them: submit, batches, cancel, pause, relaunch, the code grant and the
process's wiring (``connections``: which store, which dispatcher, which contexts)."""
