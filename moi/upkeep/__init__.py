"""Upkeep: the loops that keep moi's promises while no one is asking.

The layer may import the layers below it (services, jobs, compute, jobfiles, queue, storage, core).
Its modules:

    ``passes``      the watchdog's pass as every long-lived process runs it: engines lost, then sweeping,
                    retention and mail
    ``supervisor``  the embedded runtime's supervisor process: its Redis and cluster, kept running
"""
