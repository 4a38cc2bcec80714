"""Repetition, summaries and the table every bench prints."""
from __future__ import annotations

import statistics


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def percentiles(samples_ms: list[float]) -> dict:
    xs = sorted(samples_ms)
    pick = lambda q: xs[min(len(xs) - 1, int(len(xs) * q))]  # noqa: E731
    return {"p50": pick(0.50), "p99": pick(0.99), "n": len(xs)}


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
