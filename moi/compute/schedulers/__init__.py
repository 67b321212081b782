"""Scheduler contexts: each moi job its own job of a batch scheduler (Slurm, Grid Engine ...), here or over SSH.

- ``runner``: one small "run this command there" interface, and its files there: ``LocalRunner`` (this machine)
  and ``ssh_runner.SshRunner`` (a login node over SSH and SFTP, sharing no filesystem with moi);
- ``adapters``: per scheduler, its directives, its submit, its one batched status query, its cancel;
- ``poller``: the context's loop, which takes its queued jobs, submits them and follows them to their end.
"""
