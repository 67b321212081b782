"""Storage: Redis (its clients, the embedded server) and what moi keeps there, and this process's store.

The layer may import only the core layer below it. Its modules:

    ``redis_clients``    every Redis client moi makes, from moi's Redis URLs
    ``redis_errors``     Redis failing, as moi's errors: a lost connection, or a command Redis refused
    ``redis_server``     a redis-server moi starts itself: the embedded runtime's, the tests' and benchmarks'
    ``tree``             reading the group/job tree: a node's info, a group's children, every job under a group
    ``groups``           users and their groups, made on first use and remembered
    ``store``            changing the tree: the one writer of job state, by compare-and-set
    ``tokens``           API tokens, kept as hashes
    ``finished_counts``  counters kept by the writes that end jobs, for ``/metrics``
    ``retention``        how long a service job is kept, and what goes with each change of its state
    ``loops``            a long-lived loop's failures: each logged in one line, counted, and passed over
    ``owner_only``       files and directories only their owner may touch: moi's state directory
    ``runtime``          the embedded local runtime, as its users find it: started, read and stopped
    ``process``          this process's settings and Redis store, each made on first use
"""
