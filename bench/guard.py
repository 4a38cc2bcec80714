"""The guard of `make bench`: every figure that fell by more than 15 % against the previous run.

bench.run moves the previous results/latest.json to results/previous.json before it writes the
new one, then prints what fell, side by side. Rates fall when they drop, latencies when they
rise. A quick run is compared only with a quick run. Timing is never asserted anywhere (the
machine is shared): this prints, it does not fail.
"""
from __future__ import annotations

import json
import os

THRESHOLD = 0.15


def figures(result: dict) -> dict[str, tuple[float, bool]]:
    """name -> (value, higher is better) for every figure of a bench.run result."""
    out: dict[str, tuple[float, bool]] = {}
    for key, value in result.get("figures", {}).items():
        if isinstance(value, dict) and "median" in value:
            out[key] = (value["median"], True)
        elif isinstance(value, dict) and key.startswith("latency_"):
            for stage, p in value.items():
                for q in ("p50", "p99"):
                    out[f"{key}.{stage}.{q}"] = (p[q], False)
    for key, value in result.get("stages", {}).items():
        for stage, s in value.items():
            if isinstance(s, dict) and "p50_ms" in s:
                out[f"stages_{key}.{stage}.p50_ms"] = (s["p50_ms"], False)
    return out


def fell(previous: dict, current: dict, threshold: float = THRESHOLD) -> list[tuple[str, float, float, float]]:
    """(figure, previous, now, change) for each figure worse by more than `threshold`."""
    before, now = figures(previous), figures(current)
    out = []
    for name, (value, higher_better) in now.items():
        if name not in before or not before[name][0]:
            continue
        old = before[name][0]
        change = (value - old) / old
        if (-change if higher_better else change) > threshold:
            out.append((name, old, value, change))
    return out


def keep_previous(path: str) -> dict | None:
    """Move the results at `path` aside (…/previous.json) and return them, if any."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        previous = json.load(f)
    os.replace(path, os.path.join(os.path.dirname(path), "previous.json"))
    return previous


def report(previous: dict | None, current: dict) -> str:
    if previous is None:
        return "guard: no previous results to compare with (the next run compares with this one)"
    if previous.get("machine", {}).get("quick") != current.get("machine", {}).get("quick"):
        return "guard: the previous run was of another size (--quick); not compared"
    worse = fell(previous, current)
    if not worse:
        return f"guard: no figure fell by more than {THRESHOLD:.0%} against the previous run"
    width = max(len(n) for n, *_ in worse)
    lines = [f"guard: {len(worse)} figure(s) fell by more than {THRESHOLD:.0%} against the previous run "
             "(results/previous.json):", f"  {'figure':<{width}}  {'previous':>12}  {'now':>12}  change"]
    lines += [f"  {n:<{width}}  {old:>12,.2f}  {new:>12,.2f}  {change:+.0%}" for n, old, new, change in worse]
    return "\n".join(lines)
