"""The queue: where a job waits in Redis until an engine takes it, and what reads and holds it there.

The layer may import the layers below it (storage, core). Its modules:

    ``jobqueue``    moi's own queue in Redis: enqueue, take, release
    ``pause``       pausing and resuming queued jobs: of a context, a user, a group, or one job
    ``listing``     listing jobs newest first, filtered, a page at a time, from the index
    ``job_handle``  what ``submit`` returns: the part of ipyparallel's AsyncResult that applications use
"""
