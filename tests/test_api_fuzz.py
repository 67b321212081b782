"""The HTTP API fuzzed from its own OpenAPI document by schemathesis, against a real moi server, as two users.

The server (moi server's application on 127.0.0.1) runs in a thread, on the session's Redis and cluster.
Every operation of ``/api/v1/openapi.json`` gets requests that fit the document and requests that do not,
as alice and as bob (two tokens); the read-only ones, the engines' and the accounts' also as an admin. Then alice's real
job is used: by alice (its files and log with odd Range headers, relaunch, cancel, pause; multipart uploads
of real services, with file names of any text), and by bob, who must never get anything but a 4xx for it.
No answer may be a 5xx or hold a traceback. Every fuzzed user's group is paused first, so what the fuzzer
submits is held, never run: no code of its runs, and nothing fills a disk.

``MOI_FUZZ_EXAMPLES`` (default 6) is the number of examples per operation and pass.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from schemathesis import GenerationMode

from examples.hetatm_service import Hetatm
from moi import files, services
from moi import job as jobs
from moi.core.keys import ANONYMOUS_OWNER
from moi.jobs import connections
from tests.service_defs import Greeter, Recording
from tests.test_api import multipart, token_for
from tests.test_file_routes import a_job_with_files
from tests.test_relay_security import server

EXAMPLES = int(os.environ.get("MOI_FUZZ_EXAMPLES", "6"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples on every run: a failure is seen again
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
SERVICES = ["recording", "hetatm"]  # one takes any file, one checks its files (moi.services.validators)
TRACES = ("Traceback", 'File "')
# The Range header as the pinned document has it: digits of any script, where int() and str.isdigit() differ
ODD_RANGE = {"type": "string", "pattern": "^bytes=[0-9²٣]{0,25}-[0-9²]{0,25}$"}


@contextmanager
def served_in_a_thread() -> Iterator[str]:
    """moi server's application on a free port of 127.0.0.1, its loop in a thread; yields its base URL."""
    started: dict[str, Any] = {}
    ready = threading.Event()

    async def serve() -> None:
        async with server() as port:
            started.update(port=port, loop=asyncio.get_running_loop(), stop=asyncio.Event())
            ready.set()
            await started["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(60), "the server did not start"
    try:
        yield f"http://127.0.0.1:{started['port']}"
    finally:
        started["loop"].call_soon_threadsafe(started["stop"].set)
        thread.join(30)


class Fuzz:
    """Runs examples of operations against the server and keeps every answer that breaks the rules."""

    def __init__(self, base: str, tokens: dict[str, str]) -> None:
        self.base, self.tokens = base, tokens
        self.session = requests.Session()
        self.broken: list[str] = []
        self.calls = 0

    def run(self, operation: Any, user: str, mode: GenerationMode, forbidden: bool = False, **fixed: Any) -> None:
        """``EXAMPLES`` requests of ``operation`` as ``user``; ``forbidden``: any answer but a 4xx is broken."""
        try:
            strategy = operation.as_strategy(generation_mode=mode, **fixed)
        except HypothesisException:
            return  # nothing of this operation can be generated in this mode (e.g. nothing to break)

        @SETTINGS
        @given(strategy)
        def examples(case: Any) -> None:
            self.check(case, user, forbidden)

        try:
            examples()
        except HypothesisException as error:  # e.g. Unsatisfiable: the document leaves nothing to negate
            if "Unsatisfiable" not in type(error).__name__:
                raise

    def check(self, case: Any, user: str, forbidden: bool) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        try:
            answer = case.call(base_url=self.base, session=self.session, headers=headers, timeout=30)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
            return  # the client would not send it: nothing reached the server
        self.judge(answer, user, forbidden, lambda: case.as_curl_command(headers=headers, base_url=self.base))

    def judge(self, answer: requests.Response, user: str, forbidden: bool, request: Any) -> None:
        self.calls += 1
        text = answer.text
        wrong = []
        if answer.status_code >= 500:
            wrong.append(f"answered {answer.status_code}")
        if any(trace in text for trace in TRACES):
            wrong.append("a traceback in the body")
        if forbidden and not 400 <= answer.status_code < 500:
            wrong.append(f"another user's job answered {answer.status_code}")
        if wrong:
            self.broken.append(f"{user}: {', '.join(wrong)}: {text[:300]!r}\n    {str(request())[:600]}")

    def upload_names(self, user: str) -> None:
        """Multipart uploads whose file names are any text (quotes, '/', '..', 300 characters), past the document."""
        letters = st.characters(exclude_characters="\r\n", exclude_categories=["Cs"])
        names = st.one_of(st.text(letters, min_size=1, max_size=40), st.text(letters, min_size=200, max_size=300))

        @SETTINGS
        @given(names, st.binary(max_size=64), st.sampled_from(SERVICES))
        def examples(name: str, data: bytes, service: str) -> None:
            body, headers = multipart({"service": service}, {name: data})
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
            answer = self.session.post(f"{self.base}/api/v1/jobs", data=body, headers=headers, timeout=30)
            self.judge(answer, user, False, lambda: f"POST /api/v1/jobs with an upload named {name!r}")

        examples()


def pinned(document: dict[str, Any]) -> dict[str, Any]:
    """The document with the service named (so uploads reach the files code) and an odd Range header."""
    document = copy.deepcopy(document)
    document["components"]["schemas"]["NewJob"]["properties"]["service"] = {"type": "string", "enum": SERVICES}
    form = document["components"]["schemas"]["NewJobForm"]  # the multipart body's schema
    form["properties"]["service"] = {"type": "string", "enum": SERVICES}
    form["required"] = ["service", "input"]
    for name in ("AnonymousJob", "AnonymousJobForm"):  # the one service open to all, so its jobs are made
        document["components"]["schemas"][name]["properties"]["service"] = {"type": "string", "enum": ["greeter"]}
    for item in document["paths"].values():
        for parameter in item.get("get", {}).get("parameters", []):
            if parameter["name"] == "Range":
                parameter["schema"] = ODD_RANGE
    return document


def operations(document: dict[str, Any]) -> list[Any]:
    schema = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in schema.get_all_operations()]


def takes(operation: Any, name: str) -> bool:
    return "{" + name + "}" in operation.path


def own_job_passes(fuzz: Fuzz, odd: list[Any], seed: str) -> None:
    """Alice on her own job (its files and log, with odd Ranges; relaunch, cancel, pause) and her uploads."""
    for operation in odd:
        if operation.method.upper() == "DELETE":
            continue  # the job is needed to the end
        if takes(operation, "job_id"):
            fixed = {"job_id": seed, **({"path": "input/notes.txt"} if takes(operation, "path") else {})}
            fuzz.run(operation, "alice", GenerationMode.POSITIVE, path_parameters=fixed)
        elif operation.path in ("/api/v1/jobs", "/api/v1/anonymous/jobs") and operation.method.upper() == "POST":
            fuzz.run(operation, "alice", GenerationMode.POSITIVE, media_type="multipart/form-data")
            fuzz.run(operation, "alice", GenerationMode.NEGATIVE, media_type="multipart/form-data")
    fuzz.upload_names("alice")


def other_user_passes(fuzz: Fuzz, everything: list[Any], ids: dict[str, str]) -> None:
    """Bob with alice's job and group ids: nothing but a 4xx, whatever else he sends."""
    for operation in everything:
        for name, value in ids.items():
            if takes(operation, name):
                fuzz.run(operation, "bob", GenerationMode.POSITIVE, True, path_parameters={name: value})


def test_the_api_fuzzed_from_its_openapi_document_as_two_users_answers_no_5xx_and_no_traceback(
    r, tmp_path: Path
) -> None:
    for cls in (Hetatm, Recording, Greeter):
        services.register(cls)
    store = connections.store()
    # alice may run code (her code jobs are held like the rest), bob may not (403), the admin reads everything
    tokens = {"alice": token_for("alice"), "bob": token_for("bob", code=False), "root": token_for("root", True)}
    seed = a_job_with_files("alice", tmp_path)  # alice's real job: files, a log, a group
    (Path(files.directory_of(seed)) / "framework.log").write_text("a line of the log\n")
    store.ensure_group("bob")
    store.ensure_group("root")
    store.ensure_group(ANONYMOUS_OWNER)
    for user in [*tokens, ANONYMOUS_OWNER]:
        jobs.pause(user=user)  # what the fuzzer submits is held, never run
    try:
        with served_in_a_thread() as base:
            document = requests.get(f"{base}/api/v1/openapi.json", timeout=30).json()
            fuzz = Fuzz(base, tokens)
            everything = operations(document)
            for operation in everything:  # every operation, random ids, both users, in and out of the document
                fuzz.run(operation, "alice", GenerationMode.POSITIVE)
                fuzz.run(operation, "bob", GenerationMode.NEGATIVE)
                if operation.method.upper() in ("GET", "HEAD") or "/engines/" in operation.path:
                    fuzz.run(operation, "root", GenerationMode.POSITIVE)  # /metrics, /throughput; engines: 404s
                elif operation.path.startswith(("/api/v1/accounts", "/api/v1/users/")):  # the admins' accounts
                    fuzz.run(operation, "root", GenerationMode.NEGATIVE)  # a body or name out of the document
            own_job_passes(fuzz, operations(pinned(document)), seed)
            other_user_passes(fuzz, everything, {"job_id": seed, "group_id": str(store.group_of_user("alice"))})
            mine = requests.get(f"{base}/api/v1/jobs/{seed}", headers={"Authorization": f"Bearer {tokens['alice']}"})
    finally:
        for cls in (Hetatm, Recording, Greeter):
            services.unregister(cls.name)
    assert not fuzz.broken, f"{len(fuzz.broken)} of {fuzz.calls} requests broke the rules:\n" + "\n".join(
        fuzz.broken[:15]
    )
    assert mine.status_code == 200, "bob's requests changed alice's job"
    made = [info for user in tokens for info in store.descendant_jobs(str(store.group_of_user(user)))]
    assert len(made) > 1 and {info["status"] for info in made if info["id"] != seed} <= {"Paused", "Cancelled"}
    assert fuzz.calls > 20 * EXAMPLES, fuzz.calls  # the requests really went out
