"""Compute: where jobs run, on ipyparallel engines, and what dispatches them there and watches them.

The layer may import the layers below it (jobfiles, queue, storage, core). Its modules:

    ``context``         contexts: one per ipyparallel cluster, connected on first use
    ``dispatch``        dispatchers: work sent to a context's idle engines while its queue holds jobs
    ``worker``          the engine side of the queue: take a job, run it, take the next
    ``running``         a job on its engine: marked Running, its function called, its end recorded
    ``arguments``       what a job function receives from moi, besides its own arguments
    ``engine``          the engine side of liveness (the heartbeat) and cancellation
    ``batch_blocks``    the engine side of batches: a block of one batch's items, run one after another
    ``block_recorder``  the outcomes of a block's items, gathered and written together
    ``text_jobs``       what the CLI runs as jobs: shell commands and Python code given as text
    ``engine_roster``   engines as workers: which engine is which process, what it runs, how much it ran
    ``scaling``         adding and removing engines of the embedded cluster while it runs
    ``watchdog``        no job stays Running after its engine died
    ``sandbox/``        a web user's code run as its own uid, in a fresh interpreter (``child``,
                        ``confinement``, ``runner``)
"""
