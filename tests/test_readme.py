"""The README's Python and shell snippets run against a real server, as written (only the address
changes): a snippet that stops working fails the suite. Snippets that cannot run here are skipped
by the rules in SKIP, each with its reason, and the test checks that the rules leave most of them."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
DEFAULT_TARGET = "127.0.0.1:50051"

# A snippet (Python) or a shell line matching one of these is not run, for the reason given.
SKIP = {
    r"^make ": "builds and starts everything; the suite itself is `make test`",
    r"^(pip|pipx) install": "installs into the environment; tests/test_packaging.py builds and serves the wheel",
    r"^taskhub serve": "the test's own server stands for it, started with the block's flags",
    r"^taskhub node --server": "an agent runs until stopped (tests/test_nodes.py runs agents)",
    r"bench\.": "a benchmark: measured in bench/, never in tests",
    r"\[--|\bNAME\b|\bID\b": "a placeholder, not a value",
    r"run_job\(dsl, conf": "dsl and conf are named, not given; tests/test_flow_components.py runs that job",
    r"postgresql://\S*@db\.example": "a placeholder database host: tests/test_postgres_e2e.py serves on a real PostgreSQL",
    r"\bh[123]:50051": "placeholder hosts of several servers: tests/test_failover.py fails over between real ones",
    r"flow_sdk": "FATE's own client: tests/seeds/test_seed_004.py runs its examples",
}


def skipped(text: str) -> str | None:
    return next((why for pattern, why in SKIP.items() if re.search(pattern, text, re.M)), None)


def python_blocks() -> list[str]:
    return [textwrap.dedent(m.group(1)) for m in re.finditer(r"^ *```python\n(.*?)^ *```", README, re.S | re.M)]


def shell_blocks() -> list[list[str]]:
    """Indented code blocks outside fences, as lists of commands (backslash continuations joined)."""
    blocks, lines, fenced, i = [], README.split("\n"), False, 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and lines[i].startswith("    ") and not lines[i - 1].strip():
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            blocks.append(re.sub(r"\\\n\s*", "", "\n".join(block)).strip().split("\n"))
            continue
        i += 1
    return blocks


@pytest.fixture
def shell_env(tmp_path):
    """`taskhub` on PATH as this tree's command; tests/ reachable from the working directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "taskhub").write_text(f"#!/bin/sh\nexec {sys.executable} -m server.cli \"$@\"\n")
    (bin_dir / "taskhub").chmod(0o755)
    (tmp_path / "tests").symlink_to(REPO / "tests")
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_the_skip_rules_leave_most_snippets():
    py = python_blocks()
    sh = [line for block in shell_blocks() for line in block if line and not line.startswith("#")]
    assert len(py) >= 5 and len(sh) >= 15
    assert sum(not skipped(b) for b in py) >= 3
    assert sum(not skipped(re.split(r"\s+#\s", line)[0]) for line in sh) >= 10


def test_python_snippets(server_factory, tmp_path):
    server = server_factory("--task-path", str(tmp_path), "--allow-module", "mytasks")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    ran = 0
    for block in python_blocks():
        if skipped(block):
            continue
        first = block.split("\n", 1)[0]
        if re.fullmatch(r"# \w+\.py", first):  # a module the next snippets import
            (tmp_path / first[2:]).write_text(block)
            continue
        code = block.replace(DEFAULT_TARGET, server.grpc_target)
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"README snippet failed:\n{block}\n{proc.stderr}"
        ran += 1
    assert ran >= 2


def test_shell_snippets(server_factory, tmp_path, shell_env):
    (tmp_path / "var").mkdir()
    ran = 0
    for n, block in enumerate(shell_blocks()):
        commands = [line for line in block if line and not skipped(re.split(r"\s+#\s", line)[0])]
        if not commands:
            continue
        flags = ["--admin-token-file", str(tmp_path / "var" / "admin.token"), "--auth"] if any(
            re.match(r"taskhub serve.*--auth", line) for line in block) else []
        needs_server = any(c.startswith("taskhub") for c in commands)  # one server per database: one each
        target = server_factory(*flags, db=tmp_path / f"block{n}.db").grpc_target if needs_server else ""
        script = "set -e\n" + "\n".join(c.replace(".venv/bin/python", sys.executable) for c in commands)
        proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**shell_env, "TASKHUB_SERVER": target})
        assert proc.returncode == 0, f"README commands failed:\n{script}\n{proc.stdout}\n{proc.stderr}"
        ran += len(commands)
    assert ran >= 10
