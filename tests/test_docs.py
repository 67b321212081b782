"""Every code block of README.md and docs/*.md runs here, or says it is a sketch; every link resolves.

The convention (docs/architecture.md, "Code blocks in these pages"):
- a block whose first line is a comment starting with ``sketch`` (``# sketch: ...``, ``// sketch``,
  ``; sketch``, ``<!-- sketch -->``) is a sketch: it needs what a test cannot have (a Slurm cluster,
  your application, an id you were given) and is only read;
- a ``text`` block is output or a picture, not code;
- every other block runs: ``python`` as a script (executed in this process, in a directory of its
  own); ``sh``/``bash``/``console`` each ``moi ...`` line as a user would type it, in a subprocess
  (``pip install`` lines are the Quick start's, run by CI itself: ``.ci/run``); ``ini`` through moi's
  settings loader; ``yaml`` through moi's YAML service loader; ``json`` through ``json.loads``;
  ``js``/``html`` by ``node --check`` and the names they use of ``moi.js``.
A block that is none of these fails, naming its file and line. All of it runs against the session's
Redis and cluster (tests/conftest.py), as the rest of the suite does.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from moi.core.config import build_settings
from moi.jobs import connections
from moi.services import documents
from moi.storage import process
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKETCH = re.compile(r"^\s*(#|//|;|<!--)\s*sketch\b", re.IGNORECASE)
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
SHELLS = ("sh", "bash", "console", "shell")
PAGE_LANGS = ("js", "javascript", "html")
RUN_TIMEOUT = 60
# Commands that serve until stopped: a block holding one is a sketch (the suite starts them in its own tests).
LONG_RUNNING = re.compile(r"^moi (server|up)\b|^moi watchdog(?!.*--once)")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def first_line(self) -> str:
        return next((line for line in self.text.splitlines() if line.strip()), "")

    @property
    def kind(self) -> str:
        """sketch, text, or the runner's name; "unmarked" for a block no runner takes."""
        if SKETCH.match(self.first_line):
            return "sketch"
        if self.lang == "text":
            return "text"
        if self.lang in RUNNERS:
            return self.lang
        return "unmarked"


def blocks_of(page: Path) -> Iterator[Block]:
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, body = len(opening["indent"]), []
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            body.append(lines[end][indent:] if lines[end][:indent].strip() == "" else lines[end])
            end += 1
        yield Block(page, index + 1, opening["lang"], "\n".join(body) + "\n")
        index = end + 1


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks_of(page)]


def quick_start() -> Block:
    """The README's first block: the Quick start's two commands."""
    return next(blocks_of(ROOT / "README.md"))


# runners ----------------------------------------------------------------------------------------


def run_python(block: Block, workdir: Path) -> None:
    """The block as a script run in ``workdir`` (its functions are ``__main__``'s, shipped to the engines as
    code, as a script's are), executed in this process: its Redis, cluster and dispatcher are warm."""
    saved = process.overrides()
    here = os.getcwd()
    os.chdir(workdir)
    try:
        exec(compile(block.text, block.where, "exec"), {"__name__": "__main__"})
    finally:
        os.chdir(here)
        if process.overrides() != saved:  # the block called moi.configure: the session's settings again
            process.replace_overrides(saved, build_settings(saved))
            connections.reset()


def commands_of(block: Block) -> list[tuple[int, str]]:
    """The block's command lines, with their line numbers; a console block's other lines are output."""
    found = []
    for offset, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        line = raw.strip()
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:].strip()
        if line and not line.startswith("#"):
            found.append((offset, line))
    return found


def run_shell(block: Block, workdir: Path) -> None:
    shim = workdir / "bin" / "moi"  # the moi command of this checkout, as the console script would run it
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m moi "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    for line_number, command in commands_of(block):
        where = f"{block.page.relative_to(ROOT)}:{line_number}"
        if command.startswith("pip install"):
            continue  # the Quick start's installs, run by CI (.ci/run)
        assert command.startswith("moi "), f"{where}: {command!r} is not a moi command: mark the block sketch"
        assert not LONG_RUNNING.search(command), f"{where}: {command!r} serves until stopped: mark it sketch"
        done = subprocess.run(
            ["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        assert done.returncode == 0, f"{where}: {command!r} exited {done.returncode}:\n{done.stderr[-2000:]}"


def check_ini(block: Block, workdir: Path) -> None:
    config = workdir / "moi.ini"
    config.write_text(block.text)
    parser = configparser.ConfigParser()
    parser.read_string(block.text)
    for section in parser.sections():
        for name, value in parser[section].items():
            # moi's loader takes "a = b ; note" as the value "b ; note": a comment goes on a line of its own.
            assert not re.search(r"\s[;#]", value), f"{block.where}: [{section}] {name} holds a comment"
    saved = os.environ.get("MOI_CONFIG_FP")
    os.environ["MOI_CONFIG_FP"] = str(config)
    try:
        build_settings()
    finally:
        if saved is None:
            os.environ.pop("MOI_CONFIG_FP")
        else:
            os.environ["MOI_CONFIG_FP"] = saved


def check_yaml(block: Block, workdir: Path) -> None:
    assert documents.load(block.text, block.where), f"{block.where} defines no service"


def check_json(block: Block, workdir: Path) -> None:
    json.loads(block.text)


def moi_js_names() -> set[str]:
    """What moi.js and moi_list.js offer a page: the keys of ``global.moi`` and ``global.moi_list``."""
    names = set()
    for script, name in (("moi.js", "moi"), ("moi_list.js", "moi_list")):
        source = (ROOT / "moi" / "web" / "static" / script).read_text()
        exported = source.split(f"global.{name} = {{", 1)[1].split("};", 1)[0]
        names |= {f"{name}.{key}" for key in re.findall(r"(\w+)\s*:", exported)}
    return names


def check_page(block: Block, workdir: Path) -> None:
    code = block.text
    if block.lang == "html":
        code = "\n".join(re.findall(r"<script>(.*?)</script>", block.text, re.DOTALL))
        for source in re.findall(r'<script src="/moi/([\w.]+)"', block.text):
            assert (ROOT / "moi" / "web" / "static" / source).is_file(), f"{block.where}: no static {source}"
    used = set(re.findall(r"\b(moi(?:_list)?\.\w+)", code))
    assert used <= moi_js_names(), f"{block.where} uses what moi.js lacks: {used - moi_js_names()}"
    node = shutil.which("node")
    if node and code.strip():
        script = workdir / f"{block.page.stem}_{block.line}.js"
        script.write_text(code)
        done = subprocess.run([node, "--check", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{block.where}: {done.stderr}"


RUNNERS: dict[str, Callable[[Block, Path], None]] = {
    "python": run_python,
    **dict.fromkeys(SHELLS, run_shell),
    "ini": check_ini,
    "yaml": check_yaml,
    "json": check_json,
    **dict.fromkeys(PAGE_LANGS, check_page),
}


# the tests --------------------------------------------------------------------------------------


def test_every_block_is_run_or_marked_a_sketch() -> None:
    unmarked = [f"{block.where}: a ```{block.lang} block" for block in all_blocks() if block.kind == "unmarked"]
    assert unmarked == [], "neither run by tests/test_docs.py nor marked sketch:\n" + "\n".join(unmarked)


def test_the_quick_start_is_what_ci_runs() -> None:
    """Its second command is CI's whole job (.ci/run); its first is run below, but for pip."""
    block = quick_start()
    commands = [command for _, command in commands_of(block)]
    assert len(commands) == 2 and all(command.startswith("pip install") for command in commands)
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_quick_starts_first_command_runs_a_job(r, tmp_path: Path) -> None:
    first = commands_of(quick_start())[0][1]
    command = shlex.split(first.split(" && ", 1)[1])  # after "pip install . &&"
    assert command[0] == "moi"
    done = subprocess.run(
        [sys.executable, "-m", "moi", *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert "Success" in done.stdout and "15" in done.stdout


@pytest.mark.parametrize(
    "block", [block for block in all_blocks() if block.kind in RUNNERS], ids=lambda block: block.where
)
def test_block_runs(block: Block, r, tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "numbers.txt").write_text("3\n1\n2\n")
    (tmp_path / "text.txt").write_text("a few words of some length here\n")
    RUNNERS[block.lang](block, tmp_path)


# links ------------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors_of(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    in_code = False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def test_links_between_pages_resolve() -> None:
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not ours to check
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors_of(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == [], "links that do not resolve:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [page.name for page in PAGES[1:] if f"docs/{page.name}" not in readme]
    assert missing == [], f"pages the README does not link: {missing}"
