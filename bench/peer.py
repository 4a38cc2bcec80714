"""`make bench-peer`: taskhub beside Celery 5 + Redis and the bare machine, in one run.

    python -m bench.peer [--repeat N] [--quick]

Installs what it needs by itself, outside taskhub's dependencies: Debian's redis-server
(only if missing) and Celery into bench/.venv-peer. Redis runs on a free loopback port with
persistence off and is stopped at the end. Writes bench/results/peer.json.

Workloads: A 10,000 no-op Python tasks, 8 clients, until every result is known, sent in batches
(taskhub CreateTasks of 250, Celery group() of 250); E 4,000 no-op tasks from 8 threads, one call
per task (taskhub's blocking SDK create_task on one shared client, Celery delay() on its one app),
then every result (also with the client's coalescing off); B 2,000
/bin/true tasks, 8 clients; C 2,000 sequential submit-and-wait round trips (p50/p99: taskhub's
one ExecuteTask call, as the SDK's run_task makes it, against Celery's delay().get());
D one task printing 200,000 lines, lines/s to one reader (taskhub only).

A, E and C run in rounds that interleave taskhub, taskhub with --auth, and Celery, and print
each round's ratios: the machine's load shifts, so only figures of the same round compare. Each
round starts its own pair of taskhub servers, both with the same new PYTHONHASHSEED (a process's
own seed alone moved A by up to 9 % between identical servers: bench.server.same_hash_seed). Auth
off and on take turns going first, and before each figure every system's processes are let
settle (bench.stats.settle), so no figure carries another system's last commits. Within a
round, A's and E's taskhub figures are the mean of four runs, two before Celery's and two after
it, and C's round trips are taken in 20 chunks of 100 that take turns (auth off and on swapping
places each chunk), so every system's figure spans the same stretch of time (the load of this
shared machine moves by tens of percent within a minute).
Auth's cost is the ratio of runs taken back to back: for A and E per round the mean over the
round's four pairs of runs (auth off, on, on, off, ...), judged on their median over rounds; for
C each pair of chunks (each pair's p50s, taken one right after the other), judged on the median
over every pair of the run (60 in three rounds; each round's own median is printed too). A chunk
lasts a few tenths of a second, and this machine's speed changes between chunks by up to a third:
a round's pooled p50s let one slow chunk of either system move the ratio by more than auth costs,
and a median of three rounds' medians of ten pairs each moved by +-9 % with no difference at all
(two identical servers; README, "The harness").
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

from . import bare, workloads
from .server import TaskhubServer, same_hash_seed
from .stats import fmt, percentiles, settle, summary, table

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEER_VENV = os.path.join(HERE, ".venv-peer")
PEER_PY = os.path.join(PEER_VENV, "bin", "python")
CELERY_REQ = "celery[redis]>=5.3,<6"
C_CHUNKS = 20  # C's round trips per round, in this many turns of each system


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools() -> None:
    if not shutil.which("redis-server"):
        print("bench-peer: installing Debian's redis-server", flush=True)
        sh("apt-get", "update", "-qq", stdout=subprocess.DEVNULL)
        sh("apt-get", "install", "-y", "-qq", "redis-server", stdout=subprocess.DEVNULL)
    if not os.path.exists(PEER_PY):
        sh(sys.executable, "-m", "venv", PEER_VENV)
    if subprocess.run([PEER_PY, "-c", "import celery, redis"], capture_output=True).returncode:
        print("bench-peer: installing Celery into bench/.venv-peer", flush=True)
        sh(PEER_PY, "-m", "pip", "install", "-q", CELERY_REQ)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Celery:
    """redis-server and a prefork Celery worker, both stopped on exit."""

    def __init__(self, concurrency: int):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.env = {**os.environ, "PEER_REDIS_URL": self.url, "PYTHONPATH": REPO}
        self.concurrency = concurrency
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Celery":
        try:
            return self._start()
        except BaseException:
            self.__exit__()  # nothing we started outlives a failed start
            raise

    def _start(self) -> "Celery":
        redis = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL)
        self.procs.append(redis)
        deadline = time.time() + 20
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            if time.time() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        worker = subprocess.Popen([PEER_PY, "-m", "celery", "-A", "bench.peer_celery.app", "worker", "--pool", "prefork",
                                   "--concurrency", str(self.concurrency), "--loglevel", "WARNING", "--without-gossip",
                                   "--without-mingle", "--without-heartbeat"], cwd=REPO, env=self.env,
                                  stdout=subprocess.DEVNULL)
        self.procs.append(worker)
        time.sleep(0.5)
        if worker.poll() is not None:
            raise RuntimeError(f"the Celery worker exited with status {worker.returncode}")
        self.drive("C", 3)  # returns once a worker answers
        return self

    def drive(self, workload: str, count: int, clients: int = 8) -> dict:
        out = subprocess.run([PEER_PY, "-m", "bench.peer_celery.drive", workload, str(count), str(clients)], cwd=REPO,
                             env=self.env, capture_output=True, text=True, timeout=1800)
        if out.returncode:
            raise RuntimeError(f"celery driver failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def versions(self) -> dict:
        out = subprocess.run([PEER_PY, "-c", "import celery, redis; print(celery.__version__, redis.__version__)"],
                             capture_output=True, text=True).stdout.split()
        server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
        return {"celery": out[0], "redis-py": out[1], "redis-server": next((w[2:] for w in server if w.startswith("v=")), "")}

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def _ratio_line(label: str, off: float, on: float, celery: float, higher_is_better: bool = True) -> str:
    r = (lambda x: x / celery) if higher_is_better else (lambda x: celery / x)
    return (f"  {label:<34} taskhub {fmt(off):>8} | with --auth {fmt(on):>8} | Celery {fmt(celery):>8}"
            f"  ->  {r(off):5.2f}x / {r(on):5.2f}x Celery")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.peer")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a tenth of the work, one repetition")
    a = ap.parse_args(argv)
    reps, scale = (1, 10) if a.quick else (a.repeat, 1)
    n_a, n_b, n_c, n_d, n_e = 10_000 // scale, 2_000 // scale, 2_000 // scale, 200_000 // scale, 4_000 // scale
    ensure_tools()
    workers = os.cpu_count() or 2
    run = asyncio.run
    # Per workload and system, one figure per round: rounds interleave the systems, so each
    # round's ratio compares figures taken on the same machine at nearly the same time.
    systems = ("taskhub", "taskhub_auth", "celery")
    w: dict = {"A": {"unit": "tasks/s"}, "B": {"unit": "tasks/s"}, "C": {"unit": "ms"}, "D": {"unit": "lines/s"},
               "E": {"unit": "tasks/s"}}
    rounds = {k: {s: [] for s in systems} for k in ("A", "E", "C_p50", "C_p99")}
    e_uncoalesced: list[float] = []  # E with the client's coalescing off (auth off), for the difference it makes
    c_samples: dict[str, list[float]] = {s: [] for s in systems}
    # Per round, the mean of auth/off over the runs taken back to back (A, E), or the median over
    # the chunks taken back to back (C p50)
    auth_ratio: dict[str, list[float]] = {"A": [], "E": [], "C_p50": []}
    c_pairs: list[float] = []  # every C chunk pair's auth/off ratio, over all rounds

    load_start = os.getloadavg()
    sqlite_bare = summary([bare.sqlite_group_commit_rate(100_000 // scale) for _ in range(reps)])
    hash_seeds: list[str] = []
    with Celery(workers) as cel:
        for r in range(reps):
            # Each round a fresh pair of taskhub servers, both with one new string-hash seed: a
            # process's own seed moved A by up to 9 % between identical servers, for as long as they
            # ran (bench.server.same_hash_seed). So the pair differs only by --auth, and each round
            # is another draw of what a process start gives.
            seed = same_hash_seed()
            hash_seeds.append(seed["PYTHONHASHSEED"])
            print(f"round {r + 1} of {reps} (taskhub servers started with PYTHONHASHSEED={hash_seeds[-1]})", flush=True)
            with TaskhubServer("--python-workers", str(workers), env=seed) as off, \
                    TaskhubServer("--python-workers", str(workers), "--auth", env=seed) as on:
                pair = [("taskhub", (off.target, "")), ("taskhub_auth", (on.target, on.token))]
                pids = [off.proc.pid, on.proc.pid] + [p.pid for p in cel.procs]
                quiet = lambda: settle(pids)  # noqa: E731  (before each figure: no system pays for another's tail)
                for target, token in (off.target, ""), (on.target, on.token):  # workers' imports, channels
                    run(workloads.end_to_end(target, workloads.NOOP, n_a // 10, token=token))
                # Auth off and on take turns going first: the one that goes second meets the other's
                # tail (its last commits and WAL checkpoint), which alone cost 10-20 % in a fixed order.
                targets = dict(pair if r % 2 == 0 else pair[::-1])
                # A and E: taskhub's runs take seconds, Celery's ten times longer; each taskhub figure
                # is the mean of runs before Celery's and after it (in the reverse order), so it spans
                # the same stretch of the machine's load as Celery's; auth off and on run back to back.
                for key, taskhub_run, celery_run in (
                        ("A", lambda t, tok: run(workloads.end_to_end(t, workloads.NOOP, n_a, token=tok)),
                         lambda: cel.drive("G", n_a)["rate"]),
                        ("E", lambda t, tok: workloads.sdk_one_per_call(t, n_e, 8, tok),
                         lambda: cel.drive("A", n_e)["rate"])):
                    # Four runs each, off and on back to back (off, on, on, off before Celery's run, and
                    # on, off, off, on after it): paired, a run's jitter on this shared machine (+-15 %
                    # run to run) weighs half of what two runs let it.
                    first, second = targets
                    runs: dict[str, list[float]] = {s: [] for s in targets}
                    for system in (first, second, second, first):
                        quiet()
                        runs[system].append(taskhub_run(*targets[system]))
                    quiet()
                    rounds[key]["celery"].append(celery_run())
                    for system in (second, first, first, second):
                        quiet()
                        runs[system].append(taskhub_run(*targets[system]))
                    for system, figures in runs.items():
                        rounds[key][system].append(sum(figures) / len(figures))
                    auth_ratio[key].append(sum(a / o for a, o in zip(runs["taskhub_auth"], runs["taskhub"]))
                                           / len(runs["taskhub"]))
                quiet()
                e_uncoalesced.append(workloads.sdk_one_per_call(off.target, n_e, 8, coalesce=False))
                # C in chunks that take turns: each system's round trips spread over the same stretch.
                chunk = max(1, n_c // C_CHUNKS)
                this_round: dict[str, list[float]] = {s: [] for s in systems}
                chunk_ratios = []
                for k in range(C_CHUNKS):
                    # Auth off and on swap places every chunk: neither always meets the other's tail.
                    chunk_p50 = {}
                    for system, (target, token) in list(targets.items())[::1 if k % 2 == 0 else -1]:
                        quiet()
                        trips = run(workloads.executes(target, workloads.NOOP, chunk, token))["submit_to_done"]
                        this_round[system] += trips
                        chunk_p50[system] = statistics.median(trips)
                    chunk_ratios.append(chunk_p50["taskhub_auth"] / chunk_p50["taskhub"])
                    quiet()
                    this_round["celery"] += cel.drive("C", chunk)["samples_ms"]
                for system in systems:
                    c_samples[system] += this_round[system]
                    p = percentiles(this_round[system])
                    rounds["C_p50"][system].append(p["p50"])
                    rounds["C_p99"][system].append(p["p99"])
                auth_ratio["C_p50"].append(statistics.median(chunk_ratios))
                c_pairs += chunk_ratios
                print(_ratio_line(f"A batched no-op tasks/s ({n_a:,})", *(rounds["A"][s][r] for s in systems)))
                print(_ratio_line(f"E SDK one call per task/s ({n_e:,})", *(rounds["E"][s][r] for s in systems)))
                print(f"  {'E with coalesce=False':<34} taskhub {fmt(e_uncoalesced[r]):>8}"
                      f"{'':>34}->  {e_uncoalesced[r] / rounds['E']['celery'][r]:5.2f}x Celery")
                print(_ratio_line("C round trip p50 ms", *(rounds["C_p50"][s][r] for s in systems), False))
                print(_ratio_line("C round trip p99 ms", *(rounds["C_p99"][s][r] for s in systems), False))
                print(f"  {'--auth against auth off':<34} A {auth_ratio['A'][r]:.3f}   E {auth_ratio['E'][r]:.3f}"
                      f"   C p50 {auth_ratio['C_p50'][r]:.3f}  (runs paired back to back)", flush=True)
        versions = cel.versions()
        # B and D: taskhub (auth off) and the bare machine only; Celery has no log stream.
        with TaskhubServer("--python-workers", str(workers)) as off:
            pairs = [(bare.fork_exec_rate(n_b, 1), run(workloads.end_to_end(off.target, workloads.TRUE, n_b)))
                     for _ in range(reps)]
            w["B"]["bare"] = summary([b for b, _ in pairs])
            w["B"]["taskhub"] = summary([t for _, t in pairs])
            w["D"]["taskhub"] = summary([run(workloads.trace(off.target, workloads.chatty(n_d)))[0] for _ in range(reps)])
        w["B"]["celery"] = summary([cel.drive("B", n_b)["rate"] for _ in range(reps)])
    for key in ("A", "E"):
        for system in systems:
            w[key][system] = {**summary(rounds[key][system]), "rounds": rounds[key][system]}
    w["E"]["taskhub_coalesce_off"] = {**summary(e_uncoalesced), "rounds": e_uncoalesced}
    for system in systems:
        w["C"][system] = {**percentiles(c_samples[system]), "rounds_p50": rounds["C_p50"][system],
                          "rounds_p99": rounds["C_p99"][system]}
    import grpc
    result = {"machine": {"cores": os.cpu_count(), "versions": {
        "python": sys.version.split()[0], "grpcio": grpc.__version__, **versions}},
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "taskhub_hash_seeds": hash_seeds,  # one per round, for both servers of its pair
        "workloads": w, "bare_sqlite_rows_per_s": sqlite_bare,
        "celery_batch": "A: Celery group() of 250 tasks per apply_async (taskhub: CreateTasks of 250);"
                        " E: Celery delay() per task from 8 threads sharing its app (taskhub: create_task per task"
                        " from 8 threads sharing one blocking client, which coalesces calls that meet in flight)"}

    rows = []
    for key, label in (("A", "A no-op tasks/s, batched (Celery: group())"),
                       ("E", "E no-op tasks/s, SDK one call per task (Celery: delay())"),
                       ("B", "B /bin/true tasks/s")):
        base = w[key]["taskhub"]["median"]
        for system in ("taskhub", "taskhub_auth", "taskhub_coalesce_off", "celery", "bare"):
            if system in w[key]:
                s = w[key][system]
                rows.append([system, label, fmt(s["median"]), fmt(s["min"]), fmt(s["max"]), f"{s['median'] / base:.2f}"])
    for system in systems:
        p = w["C"][system]
        rows.append([system, "C round trip ms, p50 (p99 in max)", f"{p['p50']:.2f}", "", f"{p['p99']:.2f}",
                     f"{p['p50'] / w['C']['taskhub']['p50']:.2f}"])
    d = w["D"]["taskhub"]
    rows.append(["taskhub", "D trace lines/s, one reader", fmt(d["median"]), fmt(d["min"]), fmt(d["max"]), "1.00"])
    rows.append(["celery", "D trace lines/s", "n/a", "", "", "no log stream"])
    rows.append(["bare", "SQLite rows/s, 100-row commits", fmt(sqlite_bare["median"]), fmt(sqlite_bare["min"]),
                 fmt(sqlite_bare["max"]), ""])
    print()
    print(table(rows, ["system", "workload", "median", "min", "max", "ratio to taskhub"]))
    ra, re_ = rounds["A"], rounds["E"]
    within = lambda on, off: abs(on - off) <= 0.10 * off  # noqa: E731
    checks = {}
    for system, name in (("taskhub", "auth off"), ("taskhub_auth", "auth on")):
        checks[f"A batched >= 10x Celery group() in every round ({name})"] = all(
            t >= 10 * c for t, c in zip(ra[system], ra["celery"]))
        checks[f"E one call per task >= 3x Celery delay() in every round ({name})"] = all(
            t >= 3 * c for t, c in zip(re_[system], re_["celery"]))
        checks[f"C p50 <= half of Celery's, p99 below Celery's ({name})"] = (
            w["C"][system]["p50"] <= 0.5 * w["C"]["celery"]["p50"] and w["C"][system]["p99"] < w["C"]["celery"]["p99"])
    # Auth's cost is judged on runs taken back to back (their paired ratio; A and E: the median over
    # rounds, C: the median over every chunk pair of the run): medians taken apart also carry the
    # jitter between runs seconds apart, larger than 10 %.
    result["auth_ratio"] = {k: {"rounds": v, "median": statistics.median(v)} for k, v in auth_ratio.items()}
    result["auth_ratio"]["C_p50"].update(pairs=len(c_pairs), median=statistics.median(c_pairs))
    checks["A, E, C p50 with --auth within 10 % of auth off (paired: median of rounds; C, of all pairs)"] = all(
        within(x["median"], 1.0) for x in result["auth_ratio"].values())
    checks["A >= 1,000/s"] = w["A"]["taskhub"]["median"] >= 1000
    checks["B >= 70% of bare fork/exec"] = w["B"]["taskhub"]["median"] >= 0.7 * w["B"]["bare"]["median"]
    checks["D >= 100,000 lines/s"] = d["median"] >= 100_000
    result["targets_met"] = checks
    print("\n--auth against auth off, paired (A, E: median of rounds; C p50: of all chunk pairs): " + ", ".join(
        f"{k} {v['median']:.3f}" for k, v in result["auth_ratio"].items()))
    print("\n" + "\n".join(f"{'met ' if ok else 'MISSED'}  {name}" for name, ok in checks.items()))
    out = os.path.join(HERE, "results", "peer.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwritten to {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
