"""Services: named job types with parameters, validators, hooks in order, and YAML chains of steps.

Against the session's Redis and cluster, real files, and the CLI in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from examples.hetatm_service import SAMPLE, Hetatm
from moi import files, services
from moi.core.info import Status
from moi.errors import ServiceDefinitionError, UnknownService, ValidationFailed, WrongState
from moi.job import get_info
from moi.services import validators
from moi.services.resubmission import resubmit
from tests import service_defs, service_validators
from tests.conftest import finished, nothing_stored, run_moi

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_YAML = ROOT / "examples" / "services.yaml"
TEXT = b"the quick brown fox leapfrogs over the lazy dog the end\n"


@pytest.fixture(autouse=True)
def registered() -> object:
    for cls in (Hetatm, service_defs.Recording, service_defs.Forever):
        services.register(cls)
    yield
    for cls in (Hetatm, service_defs.Recording, service_defs.Forever):
        services.unregister(cls.name)


def connections_store():  # noqa: ANN201
    return services.registry.connections.store()


def steps_of(job_id: str) -> dict[str, dict]:
    store = services.registry.connections.store()
    return {info["name"]: info for info in store.descendant_jobs(job_id)}


def test_a_python_service_runs_its_hooks_in_the_job_directory_and_its_command_there(r) -> None:
    job_id, _, handle = services.submit("hetatm", "scientist", {"residue": "ZN"}, files={"x.pdb": SAMPLE.encode()})
    info = finished(job_id)

    assert info["status"] == Status.SUCCESS, info["result"]
    assert (info["service"], info["params"]) == ("hetatm", {"residue": "ZN"})
    with files.open(job_id, "output/hetatm.pdb") as kept:
        assert [line[17:20].strip() for line in kept.read().decode().splitlines()] == ["ZN"]
    listed = [entry.path for entry in files.list(job_id)]
    assert "framework.log" in listed  # the hooks' logger wrote there
    with files.open(job_id, "framework.log") as log:
        assert "kept 1 HETATM record(s)" in log.read().decode()


def test_each_hook_runs_in_its_own_state_written_before_it(r) -> None:
    job_id, _, _ = services.submit("recording", "scientist", {})
    info = finished(job_id)

    assert info["status"] == Status.SUCCESS, info["result"]
    with files.open(job_id, "seen.json") as seen:
        assert json.load(seen) == [
            ["preprocess", "Preprocessing"],
            ["run", "Running"],
            ["postprocess", "Postprocessing"],
            ["complete", "Postprocessing"],
        ]
    assert "framework.log" in [entry.path for entry in files.list(job_id)]


def test_skip_run_goes_straight_to_success_and_reschedule_run_runs_again_within_its_bound(r) -> None:
    skipped = finished(services.submit("recording", "scientist", {"skip": True})[0])
    with files.open(skipped["id"], "seen.json") as seen:
        assert [hook for hook, _ in json.load(seen)] == ["preprocess", "complete"]
    assert skipped["status"] == Status.SUCCESS
    assert "framework.log" not in [entry.path for entry in files.list(skipped["id"])]  # nothing was logged

    rerun = finished(services.submit("recording", "scientist", {"reruns": 2})[0])
    assert rerun["status"] == Status.SUCCESS
    assert rerun["result"] == {"runs": 3}

    endless = finished(services.submit("forever", "scientist", {})[0])
    assert endless["status"] == Status.FAILED
    assert "reschedule_run() was called more than 2 times" in endless["result"]


def test_a_hook_that_raises_fails_the_job_with_its_traceback_and_resubmit_starts_it_again(r) -> None:
    job_id, _, _ = services.submit("recording", "scientist", {"fail_in": "postprocess"})
    info = finished(job_id)
    assert info["status"] == Status.FAILED
    assert info["result_format"] == "traceback"
    assert "RuntimeError: postprocess broke on purpose" in info["result"]

    with pytest.raises(WrongState, match="only a Failed job goes back"):
        resubmit(finished(services.submit("recording", "scientist", {})[0])["id"])

    done = run_moi("resubmit", "--job-id", job_id)
    assert done.returncode == 0, done.stderr
    again = finished(job_id)
    assert again["status"] == Status.FAILED  # the same parameters fail the same way, but it ran again
    assert again["resubmitted"] == 1
    with files.open(job_id, "seen.json") as seen:
        assert [hook for hook, _ in json.load(seen)].count("postprocess") == 2


def test_validators_refuse_a_file_and_a_parameter_before_anything_is_stored(r) -> None:
    jobs_root = Path(services.registry.connections.settings().jobs_root)
    directories = set(jobs_root.glob("*"))
    with pytest.raises(ValidationFailed, match=r"Input 'x\.pdb' is refused by validator pdb"):
        services.submit("hetatm", "scientist", {}, files={"x.pdb": b"not a structure\n"})
    with pytest.raises(ValidationFailed, match=r"Input 'e\.pdb' is refused by validator non_empty"):
        services.submit("hetatm", "scientist", {}, files={"e.pdb": b""})
    with pytest.raises(ValidationFailed, match=r"Parameter 'reruns' is refused: 'many' is not an int"):
        services.submit("recording", "scientist", {"reruns": "many"})
    with pytest.raises(ValidationFailed, match=r"Parameter 'colour' is refused"):
        services.submit("recording", "scientist", {"colour": "red"})
    with pytest.raises(UnknownService, match="No service named 'nope'"):
        services.submit("nope", "scientist", {})
    assert nothing_stored(r)
    assert set(jobs_root.glob("*")) == directories


def test_the_cli_runs_a_service_and_says_what_is_wrong_in_one_line(r, tmp_path: Path) -> None:
    structure = tmp_path / "one.pdb"
    structure.write_text(SAMPLE)
    env = {"MOI_SERVICES": "examples.hetatm_service:Hetatm"}
    listed = run_moi("services", env=env)
    assert "hetatm: residue (str, default '')" in listed.stdout, listed.stderr

    ran = run_moi("run", "hetatm", "--param", "residue=HOH", "--input", str(structure), "--block", env=env)
    assert ran.returncode == 0, ran.stderr
    assert "Success" in ran.stdout

    bad = tmp_path / "bad.pdb"
    bad.write_text("hello\n")
    refused = run_moi("run", "hetatm", "--input", str(bad), env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "Input 'bad.pdb' is refused by validator pdb: it is not what the service accepts"
    ]


def test_a_yaml_chain_and_a_fan_out_run_as_child_jobs_of_the_service_job(r, tmp_path: Path) -> None:
    loaded = run_moi("services", "load", str(EXAMPLE_YAML))
    assert loaded.stdout.strip() == "Loaded 2 service(s): wordcount, textstats", loaded.stderr

    chain = finished(services.submit("wordcount", "scientist", {"min_length": "4"}, files={"text.txt": TEXT})[0])
    assert chain["status"] == Status.SUCCESS, chain["result"]
    assert chain["steps"] == ["words", "count"]
    steps = steps_of(chain["id"])
    assert {name: step["status"] for name, step in steps.items()} == {"words": "Success", "count": "Success"}
    assert steps["words"]["date_end"] <= steps["count"]["date_start"]  # count started after words ended
    with files.open(chain["id"], "output/count.txt") as count:
        assert int(count.read()) == 5  # quick brown leapfrogs over lazy

    fan = finished(services.submit("textstats", "scientist", {}, files={"text.txt": TEXT})[0])
    assert fan["status"] == Status.SUCCESS, fan["result"]
    steps = steps_of(fan["id"])
    assert all(step["status"] == Status.SUCCESS for step in steps.values())
    assert max(steps["longest"]["date_end"], steps["distinct"]["date_end"]) <= steps["report"]["date_start"]
    assert steps["split"]["date_end"] <= min(steps["longest"]["date_start"], steps["distinct"]["date_start"])
    with files.open(fan["id"], "output/report.txt") as report:
        assert report.read().decode().split() == ["9", "leapfrogs", "9"]


YAML_RULES = """
services:
  - name: rules
    parameters: [{name: code, type: int, default: 0}]
    steps:
      - name: first
        run: exit {code}
        exit_codes: {0: success, 3: done, other: failed}
      - name: second
        run: echo ran > $OUTPUT/second.txt
        outputs: [output/missing-*.txt]
        missing: terminate
      - name: third
        run: echo never
"""


def test_exit_codes_and_missing_outputs_decide_the_chain_and_the_later_steps_end_cancelled(r) -> None:
    services.load_into(services.registry.connections.store(), YAML_RULES, "rules.yaml")

    failed = finished(services.submit("rules", "scientist", {"code": 2})[0])
    assert failed["status"] == Status.FAILED
    assert failed["result"] == "step 'first' failed: exit code 2 means failed"
    steps = steps_of(failed["id"])
    assert steps["first"]["status"] == Status.FAILED
    assert steps["second"]["status"] == steps["third"]["status"] == Status.CANCELLED
    assert steps["third"]["result"] == "Cancelled: step 'first' failed: exit code 2 means failed"

    done = finished(services.submit("rules", "scientist", {"code": 3})[0])
    assert done["status"] == Status.SUCCESS
    steps = steps_of(done["id"])
    assert steps["first"]["result"]["outcome"] == "done"
    assert steps["second"]["result"] == steps["third"]["result"]
    assert steps["third"]["result"] == "Not run: step 'first' ended the chain (exit code 3 means done)"

    terminated = finished(services.submit("rules", "scientist", {})[0])
    assert terminated["status"] == Status.SUCCESS, terminated["result"]
    steps = steps_of(terminated["id"])
    assert steps["second"]["result"]["reason"] == "its outputs ['output/missing-*.txt'] are missing (terminate)"
    assert steps["third"]["status"] == Status.CANCELLED


def test_dump_and_load_round_trip_every_yaml_service(r, tmp_path: Path) -> None:
    run_moi("services", "load", str(EXAMPLE_YAML))
    dumped = run_moi("services", "dump")
    assert dumped.returncode == 0, dumped.stderr
    (tmp_path / "dumped.yaml").write_text(dumped.stdout)

    r.delete("moi:services")
    assert run_moi("services", "load", str(tmp_path / "dumped.yaml")).returncode == 0
    again = run_moi("services", "dump")
    assert again.stdout == dumped.stdout
    original = {cls.name: cls.definition for cls in services.documents.load(EXAMPLE_YAML.read_text())}
    assert {cls.name: cls.definition for cls in services.documents.load(dumped.stdout)} == original


def test_a_bad_definition_is_refused_whole_with_where_and_why(r, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  - name: a\n    steps: [{run: 'true'}]\n  - name: b\n    steps: [{run: x, after: z}]\n")
    refused = run_moi("services", "load", str(bad))
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"{bad}: step 'step1' comes after 'z', which is not a step before it"
    assert not r.exists("moi:services")
    with pytest.raises(ServiceDefinitionError, match="is not YAML"):
        services.documents.load("services: [unclosed", "x.yaml")


def test_shipped_validators_look_at_real_bytes_and_a_module_gives_its_public_functions() -> None:
    assert validators.fasta(b">seq1 demo\nACGT\nAC-GT*\n")
    assert not validators.fasta(b"ACGT\n")
    assert validators.pdb(SAMPLE.encode()) and not validators.pdb(b"HEADER only\n")
    assert validators.png(b"\x89PNG\r\n\x1a\n....") and validators.image(b"GIF89a...")
    assert validators.jpeg(b"\xff\xd8\xff\xe0") and not validators.image(b"BM....")
    assert validators.utf8_text("héllo".encode()) and not validators.utf8_text(b"\xff\xfe")
    assert not validators.non_empty(b"")
    collected = validators.collect(service_validators)
    assert [func.__name__ for func in collected] == ["short", "ascii_only"]
    validators.check_inputs(collected, {"a.txt": b"fine"})
    with pytest.raises(ValidationFailed, match="refused by validator ascii_only"):
        validators.check_inputs(collected, {"a.txt": "é".encode()})


def test_a_job_moves_through_per_state_directories_on_two_roots_and_a_failed_move_keeps_its_data(
    r, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moi.services import sweeper

    incoming, running = tmp_path / "incoming", tmp_path / "running"
    shm = Path("/dev/shm")
    archived = (shm / f"moi-test-{tmp_path.name}") if shm.is_dir() else tmp_path / "archived"  # another filesystem
    monkeypatch.setattr(
        service_defs.Moving,
        "directories",
        {"incoming": str(incoming), "running": str(running), "archived": str(archived)},
    )
    services.register(service_defs.Moving)
    try:
        job_id = services.submit("moving", "mover", {}, files={"in.txt": b"data"})[0]
        info = finished(job_id)
        assert info["status"] == Status.SUCCESS, info["result"]
        here = running / job_id
        assert info["directory"] == str(here) and not (incoming / job_id).exists()
        with files.open(job_id, "where.txt") as where:
            assert where.read().decode().splitlines() == [
                f"preprocess {incoming / job_id}",
                f"run {here} {here / 'output'}",
            ]
        assert [entry.path for entry in files.list(job_id, "output")] == ["output/out.txt"]

        assert sweeper.sweep(connections_store(), moment=time.time() + 2) == [job_id]
        info = get_info(job_id)
        assert info["status"] == Status.ARCHIVED and info["directory"] == str(archived / job_id)
        assert not here.exists()
        with files.open(job_id, "input/in.txt") as kept:
            assert kept.read() == b"data"

        blocked = tmp_path / "a-file"
        blocked.write_text("not a directory")
        monkeypatch.setattr(
            service_defs.Moving, "directories", {"incoming": str(incoming), "running": str(blocked / "below")}
        )
        failed = finished(services.submit("moving", "mover", {}, files={"in.txt": b"kept"})[0])
        assert failed["status"] == Status.FAILED
        assert failed["result"].startswith(f"the job directory could not be moved to {blocked / 'below'}: ")
        assert failed["result"].endswith("; it was left where it was")
        with files.open(failed["id"], "input/in.txt") as kept:
            assert kept.read() == b"kept"  # left where it was
    finally:
        services.unregister("moving")
        shutil.rmtree(archived, ignore_errors=True)


def test_a_retried_and_a_resubmitted_job_start_again_from_where_their_directory_moved(
    r, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempt 1 moved the directory to the running root, then failed: attempt 2 (and a resubmit) starts
    there, moves it back to where preprocess runs, and on as the service says."""
    incoming, running, marks = tmp_path / "incoming", tmp_path / "running", tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(service_defs.Flaky, "directories", {"incoming": str(incoming), "running": str(running)})
    services.register(service_defs.Flaky)
    try:
        job_id = services.submit("flaky", "mover", {"marks": str(marks)}, files={"in.txt": b"data"})[0]
        resubmitted = services.submit("flaky", "mover", {"marks": str(marks)}, retries=0)[0]
        info = finished(job_id)
        assert (info["status"], info["attempt"]) == (Status.SUCCESS, 2), info["result"]
        assert "OSError: the first run fails" in info["attempts"][0]["result"]
        assert_moved_as_the_service_says(job_id, incoming, running)
        with files.open(job_id, "input/in.txt") as kept:
            assert kept.read() == b"data"

        failed = finished(resubmitted)
        assert failed["status"] == Status.FAILED and failed["directory"] == str(running / resubmitted)
        resubmit(resubmitted)
        assert finished(resubmitted)["status"] == Status.SUCCESS
        assert_moved_as_the_service_says(resubmitted, incoming, running)
    finally:
        services.unregister("flaky")


def assert_moved_as_the_service_says(job_id: str, incoming: Path, running: Path) -> None:
    """Both runs of a Flaky job: preprocess in the incoming root, run in the running root, where it stays."""
    info = get_info(job_id)
    assert info["directory"] == str(running / job_id) and not (incoming / job_id).exists()
    with files.open(job_id, "where.txt") as where:
        assert where.read().decode().splitlines() == [f"preprocess {incoming / job_id}", f"run {running / job_id}"] * 2
    assert [entry.path for entry in files.list(job_id, "output")] == ["output/out.txt"]


YAML_SLOW = """
services:
  - name: slowchain
    steps:
      - {name: wait, run: "touch started && sleep 60"}
      - {name: after, run: "echo never"}
"""


def test_cancelling_a_running_chain_stops_its_step_and_cancels_the_rest(r) -> None:
    from moi.job import cancel
    from tests.test_queue import wait_status

    services.load_into(connections_store(), YAML_SLOW, "slow.yaml")
    job_id = services.submit("slowchain", "scientist", {})[0]
    wait_status(job_id, Status.RUNNING)
    started = Path(files.directory_of(job_id)) / "started"
    while not started.exists():  # the step's command is running
        time.sleep(0.05)
    cancel(job_id)
    info = finished(job_id)
    assert info["status"] == Status.CANCELLED
    steps = steps_of(job_id)
    assert steps["wait"]["status"] == steps["after"]["status"] == Status.CANCELLED
    assert steps["wait"]["result"] == steps["after"]["result"] == "Cancelled with the service job"


def test_a_parameter_default_of_the_wrong_type_is_refused_at_definition() -> None:
    bad = "services:\n  - name: x\n    parameters: [{name: n, type: int, default: many}]\n    steps: [{run: 'true'}]\n"
    with pytest.raises(ServiceDefinitionError, match="parameter 'n' has default 'many', which is not an int"):
        services.documents.load(bad)


def test_a_service_job_whose_engine_is_lost_fails_with_its_unfinished_steps(r) -> None:
    from moi.compute import watchdog
    from moi.core.info import new_id, new_info

    store = connections_store()
    group = store.ensure_group("lost")
    job = new_info(new_id(), "chain", "job", "", parent=group, context="default")
    job.update(status=Status.RUNNING, engine="gone:1", service="rules", steps=["first", "second"])
    store.add_nodes(group, [job])
    done = new_info(new_id(), "first", "job", "", context="default")
    done.update(status=Status.SUCCESS, step="first")
    running = new_info(new_id(), "second", "job", "", context="default")
    running.update(status=Status.RUNNING, step="second")
    store.add_under(job["id"], [done, running])
    r.sadd("moi:running", job["id"])  # taken by an engine whose heartbeat is gone

    assert watchdog.Watchdog(store, grace=0).check() == [job["id"]]
    assert store.get(job["id"])["status"] == Status.FAILED
    assert store.get(running["id"])["status"] == Status.FAILED
    assert store.get(running["id"])["result"].startswith("Engine lost")
    assert store.get(done["id"])["status"] == Status.SUCCESS  # what had ended stays as it ended
