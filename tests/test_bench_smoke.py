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
    result = json.loads(out.read_text())
    for auth in ("auth_off", "auth_on"):  # the round trip by stage, from a real instrumented server
        stages = result["stages"][auth]
        assert stages["trips"] > 0 and stages["round trip"]["p50_ms"] > 0
        assert all(stages[name]["mean_ms"] >= 0 for name in ("result commit", "dispatch to worker", "waiter notified"))
        # the event loop's own CPU over the stages it brackets: some, and never more than the stage took
        for name in ("interceptors (auth, metrics)", "engine", "dispatch to worker", "result commit"):
            assert 0 < stages[name]["loop_cpu_p50_ms"] <= stages[name]["p50_ms"] + 0.01, (name, stages[name])
        assert "loop_cpu_p50_ms" not in stages["pipe to worker"]  # the worker's side: no loop CPU to show
    assert result["ceiling"]["limit_batched_per_s"] > 0 and result["ceiling"]["taskhub_batched_fraction"] > 0
    # the floor of a round trip: a bare ExecuteTask-shaped gRPC call, a pipe round trip, two commits
    assert result["ceiling"]["floor_round_trip_ms"] > result["ceiling"]["grpc_call_round_trip_ms"] > 0
    assert result["ceiling"]["taskhub_round_trip_over_floor"] > 0
    assert "guard:" in p.stdout


def test_guard_prints_each_figure_that_fell():
    """bench/guard.py: rates that dropped and latencies that rose by more than 15 %, nothing else."""
    sys.path.insert(0, str(REPO))
    from bench import guard
    previous = {"machine": {"quick": False}, "figures": {
        "creates_per_s": {"median": 1000.0}, "python_noop_per_s": {"median": 1000.0},
        "latency_python_ms": {"submit_to_done": {"p50": 2.0, "p99": 10.0}}}}
    current = {"machine": {"quick": False}, "figures": {
        "creates_per_s": {"median": 800.0}, "python_noop_per_s": {"median": 900.0},
        "latency_python_ms": {"submit_to_done": {"p50": 2.5, "p99": 9.0}}}}
    fell = {name: (old, new) for name, old, new, _ in guard.fell(previous, current)}
    assert fell == {"creates_per_s": (1000.0, 800.0), "latency_python_ms.submit_to_done.p50": (2.0, 2.5)}
    text = guard.report(previous, current)
    assert "creates_per_s" in text and "1,000.00" in text and "800.00" in text and "python_noop" not in text
    assert "not compared" in guard.report({"machine": {"quick": True}}, current)
