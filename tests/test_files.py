"""Job files: a directory per job, inputs in, outputs listed and read back, confined to it.

Real files on the real filesystem, the session's Redis and cluster, and the CLI in a subprocess.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from moi import files
from moi.core.info import Status, new_id
from moi.errors import InputRefused, InvalidId, NoSuchFile, PathRefused
from moi.job import get_info, pause, resume, submit
from tests import files_jobs, jobs, queue_jobs
from tests.conftest import finished, nothing_stored, run_moi
from tests.test_queue import wait_status

WAIT = 120  # seconds: a bound on a hang, never an assertion on time


def test_a_python_job_runs_in_its_directory_with_its_inputs_and_lists_its_outputs(r, tmp_path: Path) -> None:
    source = tmp_path / "from-a-path.txt"
    source.write_text("path ")
    inputs = {"a-path.txt": str(source), "b-bytes.txt": b"bytes ", "c-file.txt": io.BytesIO(b"file")}

    job_id, _, handle = submit("default", "filer", "files", None, files_jobs.use_files, files=inputs)
    seen = handle.get(timeout=WAIT)

    directory = files.directory_of(job_id)
    assert seen["workdir"] == seen["cwd"] == directory
    assert seen["inputs"] == {"a-path.txt": "path ", "b-bytes.txt": "bytes ", "c-file.txt": "file"}
    assert (seen["input"], seen["output"], seen["temp"]) == tuple(
        os.path.join(directory, name) for name in ("input", "output", "tmp")
    )
    assert int(seen["cpu"]) >= 1
    assert get_info(job_id)["files"] == {"count": 5, "size": len("path bytes file") * 2 + 1}

    listed = [(entry.path, entry.is_dir, entry.size) for entry in files.list(job_id)]
    assert listed == [
        ("input", True, 0),
        ("input/a-path.txt", False, 5),
        ("input/b-bytes.txt", False, 6),
        ("input/c-file.txt", False, 4),
        ("output", True, 0),
        ("output/deeper", True, 0),
        ("output/deeper/count.txt", False, 1),
        ("output/joined.txt", False, 15),
        ("tmp", True, 0),
    ]
    assert [entry.path for entry in files.list(job_id, "output", recursive=False)] == [
        "output/deeper",
        "output/joined.txt",
    ]
    with files.open(job_id, "output/joined.txt") as handle_:
        assert handle_.read() == b"path bytes file"


def test_a_job_without_files_has_no_directory_and_workdir_true_gives_one(r) -> None:
    plain, _, handle = submit("default", "filer", "plain", None, jobs.add, 1, 2)
    assert handle.get(timeout=WAIT) == 3
    assert "files" not in get_info(plain) and not os.path.exists(files.directory_of(plain))
    with pytest.raises(NoSuchFile, match="No files of job"):
        files.list(plain)

    empty, _, handle = submit("default", "filer", "empty", None, files_jobs.where, workdir=True)
    assert handle.get(timeout=WAIT) == files.directory_of(empty)
    assert get_info(empty)["files"] == {"count": 0, "size": 0}


def test_the_cli_submits_inputs_lists_and_downloads(r, tmp_path: Path) -> None:
    (tmp_path / "numbers.txt").write_text("1\n2\n3\n")
    command = 'sort -r "$INPUT/numbers.txt" > "$OUTPUT/sorted.txt"; echo "cpus $CPU"'
    done = run_moi(
        "submit", "--cmd", command, "--cmd-type", "system", "--input", str(tmp_path / "numbers.txt"), "--block"
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[3]
    assert "status\t\t: Success" in done.stdout and "cpus " in done.stdout

    listing = run_moi("files", "--job-id", job_id)
    assert listing.returncode == 0, listing.stderr
    assert [line.split() for line in listing.stdout.splitlines()] == [
        ["0", "input/"],
        ["6", "input/numbers.txt"],
        ["0", "output/"],
        ["6", "output/sorted.txt"],
        ["0", "tmp/"],
    ]
    top = run_moi("files", "--job-id", job_id, "--no-recursive").stdout.split()
    assert top == ["0", "input/", "0", "output/", "0", "tmp/"]
    assert run_moi("download", "--job-id", job_id, "output/sorted.txt").stdout == "3\n2\n1\n"
    run_moi("download", "--job-id", job_id, "output/sorted.txt", "-o", str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_text() == "3\n2\n1\n"


def test_paths_that_leave_the_job_directory_are_refused_and_nothing_outside_is_read(r, tmp_path: Path) -> None:
    job_id, _, handle = submit("default", "filer", "confined", None, files_jobs.where, files={"in.txt": b"inside"})
    handle.get(timeout=WAIT)
    directory = Path(files.directory_of(job_id))
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (directory / "output" / "link.txt").symlink_to(secret)
    (directory / "output" / "linked-dir").symlink_to(tmp_path)

    refused = {
        "../" + job_id + "/input/in.txt": "climbs out",
        "input/../../x": "climbs out",
        str(secret): "absolute",
        "input/in.txt\x00": "NUL",
        "output/link.txt": "symbolic link",
        "output/linked-dir/secret.txt": "symbolic link",
    }
    for path, why in refused.items():
        with pytest.raises(PathRefused, match=why):
            files.open(job_id, path)
    with pytest.raises(PathRefused, match="symbolic link"):
        files.list(job_id, "output/linked-dir")
    assert [entry.path for entry in files.list(job_id, "output")] == []  # links are never listed
    with pytest.raises(NoSuchFile, match="'output/none.txt' in the files"):
        files.open(job_id, "output/none.txt")

    for path in ("../x", "output/link.txt"):
        done = run_moi("download", "--job-id", job_id, path)
        assert done.returncode == 1 and done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith(f"Path '{path}' is refused for job {job_id}")
    assert run_moi("files", "--job-id", "not-a-job").stderr.startswith("Not a job id: 'not-a-job'")
    unknown = new_id()
    assert run_moi("files", "--job-id", unknown).stderr.strip() == (
        f"No files of job {unknown}; `moi files --job-id {unknown}` lists them"
    )


def test_a_directory_swapped_for_a_link_while_opening_never_reads_outside(r, tmp_path: Path) -> None:
    job_id, _, handle = submit("default", "filer", "race", None, files_jobs.where, workdir=True)
    handle.get(timeout=WAIT)
    output = Path(files.directory_of(job_id)) / "output"
    real, parked = output / "sub", output / "parked"
    real.mkdir()
    (real / "data.txt").write_text("inside")
    (tmp_path / "data.txt").write_text("outside")
    stop = threading.Event()

    def swap() -> None:  # sub is a real directory, then a link out, then the directory again, over and over
        while not stop.is_set():
            os.rename(real, parked)
            os.symlink(tmp_path, real)
            os.unlink(real)
            os.rename(parked, real)

    swapper = threading.Thread(target=swap)
    swapper.start()
    outcomes = set()
    try:
        for _ in range(2000):
            try:
                with files.open(job_id, "output/sub/data.txt") as handle_:
                    outcomes.add(handle_.read())
            except (PathRefused, NoSuchFile) as refusal:
                outcomes.add(type(refusal).__name__)
    finally:
        stop.set()
        swapper.join()
    assert b"outside" not in outcomes
    assert b"inside" in outcomes


def test_a_refused_input_stores_nothing(r, tmp_path: Path) -> None:
    cases = {
        "cannot read": [str(tmp_path / "missing.txt")],
        "plain file name": {"a/b.txt": b"x"},
        "two inputs have that name": [str(tmp_path / "x" / "same.txt"), str(tmp_path / "y" / "same.txt")],
        "give a path, bytes or a binary file object": {"n.txt": 12},
        "binary mode": {"t.txt": io.StringIO("text")},
    }
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.txt").write_text("same")
    root = Path(files.directory_of(new_id())).parent
    before = set(root.iterdir()) if root.exists() else set()
    for why, inputs in cases.items():
        with pytest.raises(InputRefused, match=why):
            submit("default", "filer", "refused", None, jobs.add, 1, 2, files=inputs)
    assert nothing_stored(r)
    assert (set(root.iterdir()) if root.exists() else set()) == before  # no directory left behind
    done = run_moi("submit", "--cmd", "return 1", "--input", str(tmp_path / "missing.txt"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("Input 'missing.txt' is refused: cannot read"), done.stderr
    with pytest.raises(InvalidId):
        files.list("../etc")


def test_an_engine_that_cannot_see_the_job_directory_fails_the_job_saying_why(r, store, tmp_path: Path) -> None:
    store.ensure_group("far")
    pause(user="far")  # held back while its directory goes away, as on a host that does not share the root
    job_id, _, _ = submit("default", "far", "unseen", None, files_jobs.where, workdir=True)
    files.remove_directory(files.directory_of(job_id))
    resume(user="far")

    info = finished(job_id, timeout=WAIT)
    assert info["status"] == Status.FAILED
    assert info["result"].startswith("Never started: engine ") and "cannot see the job directory" in info["result"]
    assert "MOI_JOBS_DIR" in info["result"]


def test_delete_keeps_the_info_and_cancels_a_running_job_first(r, tmp_path: Path) -> None:
    release = tmp_path / "never"
    job_id, _, handle = submit("default", "filer", "kept", None, files_jobs.where, files={"a.txt": b"a"})
    handle.get(timeout=WAIT)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("mine")
    (Path(files.directory_of(job_id)) / "output" / "out-link").symlink_to(keep)
    done = run_moi("delete", "--job-id", job_id)
    assert done.returncode == 0 and done.stdout.strip() == f"Deleted the files of job {job_id}", done.stderr
    assert not os.path.exists(files.directory_of(job_id))
    assert (keep / "precious.txt").read_text() == "mine"  # removal never follows a link out
    info = get_info(job_id)
    assert (info["status"], info["files"], info["name"]) == (Status.SUCCESS, "deleted", "kept")

    running, _, _ = submit("default", "filer", "running", None, queue_jobs.hold, str(release), workdir=True)
    wait_status(running, Status.RUNNING)
    files.delete(running)
    assert get_info(running)["status"] == Status.CANCELLED and get_info(running)["files"] == "deleted"
    assert not os.path.exists(files.directory_of(running))
    again = run_moi("delete", "--job-id", running)  # deleted already: said again, no error
    assert again.returncode == 0, again.stderr


def test_a_removed_job_loses_its_directory_and_the_sweeper_removes_those_of_gone_jobs(r, store) -> None:
    import asyncio

    from moi.group import remove_nodes
    from moi.relay.hub import Hub

    removed, _, handle = submit("default", "filer", "removed", None, files_jobs.where, workdir=True)
    handle.get(timeout=WAIT)
    hub = Hub(store.url, store.keys, store.ttl)

    async def remove() -> None:
        try:
            await remove_nodes(hub.redis, store.keys, [removed])
        finally:
            await hub.close()

    asyncio.run(remove())
    assert not os.path.exists(files.directory_of(removed))

    expired, _, handle = submit("default", "filer", "expired", None, files_jobs.where, workdir=True)
    handle.get(timeout=WAIT)
    fresh, _ = files.prepare(new_id(), None)  # a job being submitted: no info object yet
    r.delete(store.keys.info(expired))  # as its TTL would
    old = os.path.getmtime(files.directory_of(expired)) - files.SWEEP_GRACE - 1
    os.utime(files.directory_of(expired), (old, old))

    swept = run_moi("watchdog", "--once")
    # (Directories of earlier tests' jobs, flushed from Redis long enough ago, may go too.)
    assert f"removed the files of gone job {expired}" in swept.stdout.splitlines(), swept.stderr
    assert not os.path.exists(files.directory_of(expired)) and os.path.isdir(fresh)
    files.remove_directory(fresh)


def test_every_batch_item_gets_its_own_directory_with_the_inputs(r, tmp_path: Path) -> None:
    from moi.jobs.batch import submit_many

    shared = {"a.txt": b"shared ", "b.txt": io.BytesIO(b"by all")}  # a file object is read once, for every item
    out = (tmp_path / "out").as_uri()
    job_ids, _, batch = submit_many(
        "default", "sweeper", "sweep", None, files_jobs.use_files, [()] * 3, files=shared, outputs=out
    )
    results = batch.get(timeout=WAIT)
    for job_id, seen in zip(job_ids, results, strict=True):
        assert seen["workdir"] == seen["cwd"] == files.directory_of(job_id)
        assert seen["inputs"] == {"a.txt": "shared ", "b.txt": "by all"}
        assert get_info(job_id)["files"] == {"count": 4, "size": 7 + 6 + 13 + 1}
        expected = ["output/deeper", "output/deeper/count.txt", "output/joined.txt"]
        assert [entry.path for entry in files.list(job_id, "output")] == expected
        assert (tmp_path / "out" / job_id / "joined.txt").read_text() == "shared by all"

    (tmp_path / "in.txt").write_text("line\n")
    (tmp_path / "commands").write_text('wc -l < "$INPUT/in.txt"\ncat "$INPUT/in.txt"\n')
    done = run_moi("submit", "--each", str(tmp_path / "commands"), "--input", str(tmp_path / "in.txt"), "--block")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("status\t\t: Success") == 2 and "line" in done.stdout
