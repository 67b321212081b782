"""The package a newcomer can draw: layers held by import-linter, no cycles, small modules and
functions, and every public import path (with the original moi's names) still there."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "moi"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 40

# Public paths, each with names its users import (the original moi's among them).
PUBLIC = {
    "moi": ["configure", "settings", "ctx_default", "ctxs", "r_client", "REDIS_KEY_TIMEOUT", "moi_js", "Status"],
    "moi.job": ["submit", "submit_many", "cancel", "get_info", "relaunch", "system_call", "ctxs", "ctx_default"],
    "moi.group": ["get_id_from_user", "get_user_from_id", "create_info", "Group"],
    "moi.websocket": ["MOIMessageHandler", "user_name_problem"],
    "moi.server": ["make_app", "STATIC_PATH", "cookie_secret", "FILES_ROUTE"],
    "moi.client": ["Client"],
    "moi.services": ["Service", "Parameter", "validators", "register", "submit"],
    "moi.files": ["directory_of", "list", "open", "delete"],
    "moi.errors": ["MoiError", "UnknownId", "JobCancelled"],
    "moi.cli": ["main", "wait_for"],
}


def test_the_layers_contract_holds() -> None:
    """import-linter's contracts (pyproject.toml): each layer imports only those below it, no cycles."""
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_400_lines() -> None:
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in _modules()}
    long = {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert long == {}, f"split these by responsibility: {long}"


# Parsed in a process of its own: CPython 3.11.7's ast.parse can fail with "AST constructor recursion depth
# mismatch" in a process whose earlier tests left threads that change the recursion limit (ipyparallel's).
_LONG_FUNCTIONS = """
import ast, pathlib, sys
root, most = pathlib.Path(sys.argv[1]), int(sys.argv[2])
for path in sorted((root / "moi").rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > most:
                print(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
"""


def test_no_function_over_40_lines() -> None:
    argv = [sys.executable, "-c", _LONG_FUNCTIONS, str(ROOT), str(MAX_FUNCTION_LINES)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == []


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_public_paths_import_with_their_names(path: str) -> None:
    module = importlib.import_module(path)
    exported = module.__all__
    for name in PUBLIC[path]:
        assert name in exported, f"{path}.__all__ lacks {name}"
    lazy = ("ctx_default", "REDIS_KEY_TIMEOUT")  # read from the settings when asked for
    missing = [name for name in exported if name not in lazy and not hasattr(module, name)]
    assert missing == [], f"{path}.__all__ names what it does not hold: {missing}"


def test_the_command_runs_as_a_module_and_as_a_script() -> None:
    for command in ([sys.executable, "-m", "moi", "--help"], [str(Path(sys.executable).parent / "moi"), "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "submit" in done.stdout and "server" in done.stdout
