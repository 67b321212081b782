"""Submit a few jobs from Python and print their info objects.

Run it with no configuration (moi starts its local runtime) or pointed at your
own Redis and cluster (MOI_REDIS_URL, MOI_CONTEXTS):

    python examples/submit_jobs.py
"""

import json

from moi import ctx_default
from moi.cli import wait_for
from moi.job import submit, system_call


def hello(name, **kwargs):
    """Reports its progress with status_update, then returns a greeting."""
    import time  # a function from a script travels as code: it imports what it uses

    for step in range(1, 4):
        kwargs["status_update"](f"warming up ({step}/3)")
        time.sleep(0.2)
    return f"hi {name}!"


def crash(**kwargs):
    """Fails: the job ends Failed with this traceback as its result."""
    return float("crash and burn")


def main():
    jobs = [
        submit(ctx_default, "example-user", "The hello job", "/hello_result", hello, "moi"),
        submit(ctx_default, "example-user", "The failing job", None, crash),
        submit(ctx_default, "example-user", "A shell command", None, system_call, "uname -s; echo done"),
    ]
    for job_id, _group_id, _handle in jobs:
        info = wait_for(job_id, timeout=120)
        print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
