"""``moi files``, ``moi download`` and ``moi files fetch``: a job's files from a terminal, here or on its
cluster over SSH (see ``moi.jobs.job_files``)."""

from __future__ import annotations

import shutil
import sys
from typing import BinaryIO

import click

from moi.core.redact import printable
from moi.jobfiles.reading import LIST_PATH_MAX
from moi.jobs import job_files
from moi.jobs.cancel import delete

CHUNK = 1 << 20


@click.command("files")
@click.option("--job-id", required=True, help="The job whose files to list.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Into subdirectories too.")
@click.argument("path", required=False, default="")
def files_command(job_id: str, recursive: bool, path: str) -> None:
    """List a job's files as `size  path` lines (directories end with /).

    `moi files fetch JOB` brings the files of a job that ran on a cluster over SSH home."""
    for entry in job_files.list(job_id, path, recursive=recursive):
        name = printable(entry.path, LIST_PATH_MAX)  # a job names its files: no escape reaches the terminal
        click.echo(f"{entry.size:>12}  {name}/" if entry.is_dir else f"{entry.size:>12}  {name}")


@click.command("download")
@click.option("--job-id", required=True, help="The job the file belongs to.")
@click.option("-o", "--output", "output", default="-", show_default=True, help="Where to write it (- for stdout).")
@click.argument("path")
def download_command(job_id: str, output: str, path: str) -> None:
    """Copy one of a job's files out, to stdout or a file."""
    with job_files.open(job_id, path) as source:
        if output == "-":
            _copy(source, sys.stdout.buffer)
            return
        with open(output, "wb") as target:
            _copy(source, target)


def _copy(source: BinaryIO, target: BinaryIO) -> None:
    shutil.copyfileobj(source, target, CHUNK)
    target.flush()


@click.command("fetch")
@click.argument("job_id")
def fetch_command(job_id: str) -> None:
    """Bring the files of a job that ran on a cluster over SSH home, into its job directory here."""
    count = job_files.fetch(job_id)
    click.echo(f"Fetched {count} file{'' if count == 1 else 's'} of job {job_id}")


@click.command("delete")
@click.option("--job-id", required=True, help="The job whose files to delete.")
def delete_command(job_id: str) -> None:
    """Delete a job's files (cancelling it first if it has not finished); its info object stays."""
    delete(job_id)
    click.echo(f"Deleted the files of job {job_id}")
