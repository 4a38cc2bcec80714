"""`make bench` runs end to end (quick mode) and writes every figure. No timing is asserted."""
import json
import subprocess
import sys

from conftest import REPO


def test_bench_quick_writes_every_figure(tmp_path):
    out = tmp_path / "latest.json"
    p = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "no-op Python tasks/s" in p.stdout
    figures = json.loads(out.read_text())["figures"]
    for key in ("creates_per_s", "creates_batched_per_s", "python_noop_per_s", "command_true_per_s",
                "bare_fork_exec_per_s", "trace_python_lines_per_s", "trace_command_lines_per_s"):
        assert figures[key]["median"] > 0, key
    for kind in ("python", "command"):
        assert figures[f"latency_{kind}_ms"]["submit_to_running"]["p50"] > 0
