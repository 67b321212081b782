"""The queue: where a job waits (``jobqueue``), pausing, scaling, job handles and listing."""
