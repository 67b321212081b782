"""Services for the services tests (engines import them by reference)."""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

from moi.compute import engine
from moi.services import Parameter, SchedulerJob, Service


def _status_now(service: Service) -> str:
    store, _ = engine.current_job()
    return str(store.get(service.job_id)["status"])


class Recording(Service):
    """Writes down, in each hook, the state its job is in; asks for a rerun while ``reruns`` last."""

    name = "recording"
    parameters = [
        Parameter("reruns", "int", default=0),
        Parameter("skip", "bool", default=False),
        Parameter("fail_in", "str", default=""),
        Parameter("pause", "float", default=0.0),  # seconds each hook lasts, so a page sees every state
    ]

    def _note(self, hook: str) -> None:
        time.sleep(self.params["pause"])
        seen = Path("seen.json")
        notes = json.loads(seen.read_text()) if seen.exists() else []
        notes.append([hook, _status_now(self)])
        seen.write_text(json.dumps(notes))
        if self.params["fail_in"] == hook:
            raise RuntimeError(f"{hook} broke on purpose")

    def preprocess(self) -> None:
        self._note("preprocess")
        if self.params["skip"]:
            self.skip_run()

    def run(self) -> dict[str, int]:
        self._note("run")
        return {"runs": sum(1 for hook, _ in json.loads(Path("seen.json").read_text()) if hook == "run")}

    def postprocess(self) -> None:
        self._note("postprocess")
        self.logger.info("postprocess saw %d run(s)", self.params["reruns"])
        runs = sum(1 for hook, _ in json.loads(Path("seen.json").read_text()) if hook == "run")
        if runs <= self.params["reruns"]:
            self.reschedule_run()

    def complete(self) -> None:
        self._note("complete")


class Forever(Service):
    """Reschedules without end: the bound stops it."""

    name = "forever"
    reschedule_limit = 2

    def run(self) -> str:
        return ["true"]  # type: ignore[return-value]

    def postprocess(self) -> None:
        self.reschedule_run()


class Slow(Service):
    name = "slow"

    def run(self) -> str:
        time.sleep(0.01)
        return "sleep 60"


class Kept(Service):
    """Kept for seconds: its retention hooks write down each call in ``counts``."""

    name = "kept"
    parameters = [Parameter("counts", "str", required=True)]
    archive_after = "1s"
    expire_after = "1s"

    def run(self) -> str:
        return "echo result > output/result.txt"

    def _count(self, hook: str) -> None:
        with open(Path(self.params["counts"]) / f"{hook}.log", "a") as log:
            log.write(f"{self.job_id} {Path(self.directory).is_dir()}\n")

    def archive(self) -> None:
        self._count("archive")

    def expire(self) -> None:
        self._count("expire")


class Moving(Service):
    """Kept under a root per state (the test sets ``directories``); writes down where each hook ran."""

    name = "moving"
    archive_after = "1s"

    def preprocess(self) -> None:
        Path("where.txt").write_text(f"preprocess {Path.cwd()}\n")

    def run(self) -> str:
        with open("where.txt", "a") as where:
            where.write(f"run {Path.cwd()} {os.environ['OUTPUT']}\n")
        return "echo out > $OUTPUT/out.txt"


class Flaky(Service):
    """Kept under a root per state (the test sets ``directories``); the first run of each job fails (a
    mark named after the job in ``marks`` says it did), the next succeeds; writes down where each hook ran."""

    name = "flaky"
    parameters = [Parameter("marks", "str", required=True)]
    retries = 2
    backoff = "0.2s"

    def preprocess(self) -> None:
        with open("where.txt", "a") as where:
            where.write(f"preprocess {Path.cwd()}\n")

    def run(self) -> str:
        with open("where.txt", "a") as where:
            where.write(f"run {Path.cwd()}\n")
        failed = Path(self.params["marks"]) / self.job_id
        if not failed.exists():
            failed.touch()
            raise OSError("the first run fails")
        return "echo out > $OUTPUT/out.txt"


class Hangs(Service):
    """Kept for seconds; its expire() hangs, until its hook job's time limit ends it."""

    name = "hangs"
    archive_after = "1s"
    expire_after = "1s"

    def run(self) -> dict[str, bool]:
        return {"ran": True}  # a result (a string would be a command to run)

    def expire(self) -> None:
        time.sleep(300)


class Chatty(Service):
    """Logs three lines, waits for a ``go`` file in its directory, logs a last one."""

    name = "chatty"

    def run(self) -> dict[str, bool]:
        for index in range(3):
            self.logger.info("line %d", index)
        for _ in range(1200):
            if Path("go").exists():
                break
            time.sleep(0.05)
        self.logger.info("last")
        return {"done": True}  # a result (a string would be a command to run)


class Reads(Service):
    """Returns the text of each of its inputs, by name (what a fetch or a copy brought in)."""

    name = "reads"

    def run(self) -> dict[str, str]:
        return {path.name: path.read_text(errors="replace") for path in sorted(Path(os.environ["INPUT"]).iterdir())}


SWAP_AFTER_CHECK: list[str] = []  # files ``checks_then_swaps`` rewrites once it has checked an input


def checks_then_swaps(source: bytes | str) -> bool:
    """Accepts only b"checked", then rewrites the files in SWAP_AFTER_CHECK: a user racing the copy."""
    content = source if isinstance(source, bytes) else Path(source).read_bytes()
    for path in SWAP_AFTER_CHECK:
        Path(f"{path}.new").write_bytes(b"swapped")
        os.replace(f"{path}.new", path)
    return content == b"checked"


class ReadsChecked(Reads):
    """``reads``, with a validator that swaps its input's file once it has checked it."""

    name = "reads-checked"
    validators = [checks_then_swaps]


class Greeter(Service):
    """Open to anonymous users: logs its greeting and writes it to ``output/said.txt``."""

    name = "greeter"
    anonymous = True
    parameters = [Parameter("word", "str", default="hello")]
    archive_after, expire_after = "30d", "60d"

    def run(self) -> dict[str, str]:
        self.logger.info("greeting %s", self.params["word"])
        if self.params["word"] == "fail":  # a failure, with a traceback of the server's paths
            raise ValueError("no greeting for fail")
        Path("output").mkdir(exist_ok=True)
        Path("output/said.txt").write_text(self.params["word"] + "\n")
        return {"said": self.params["word"]}


class OnSlurm(Service):
    """saliweb's shape: ``run`` hands a script to the batch scheduler; ``postprocess`` reads what it wrote."""

    name = "on-slurm"
    parameters = [Parameter("words", "str", default="from the cluster")]

    def run(self) -> SchedulerJob:
        command = f"echo {shlex.quote(self.params['words'])} > made.txt; nproc > cores.txt"
        return SchedulerJob(command, resources={"cores": 2, "walltime": "5m"}, context="hpc")

    def postprocess(self) -> None:
        with open(os.path.join(self.directory, "made.txt")) as made:
            Path(self.directory, "postprocessed.txt").write_text(made.read().upper())


class RunsThere(Service):
    """A service submitted to a scheduler context: its hooks on an engine, its run()'s command a job of that context."""

    name = "runs-there"
    context = "here"
    resources = {"cores": 1}

    def run(self) -> str:
        return "echo from the scheduler > there.txt"

    def postprocess(self) -> None:
        Path(self.directory, "after.txt").write_text(Path(self.directory, "there.txt").read_text().upper())
