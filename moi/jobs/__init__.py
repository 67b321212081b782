"""Jobs as the Python API makes them, and the process's wiring (which store, dispatcher and contexts).

The layer may import the layers below it (compute, jobfiles, queue, storage, core). Its modules:

    ``submit``       submitting jobs (and code, relaunch, pause and resume) from Python
    ``batch``        batches: many jobs of one function (a parameter sweep), queued together
    ``cancel``       cancelling jobs (one, or every unfinished job under a group), and deleting a job's files
    ``compat``       the names that applications written for the original moi import, on moi's own store
    ``grant``        who may run code over the web, and where it runs: the server's side of the sandbox
    ``connections``  the wiring of a process: its settings and store, and the contexts, dispatchers and queue
                     made from them on first use
"""
