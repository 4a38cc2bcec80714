"""`pip install .` from a fresh clone: the build backend generates the gRPC stubs, so the sdist and
the wheel carry them, the descriptor set and the dashboard; the wheel's code alone serves.
(`make wheel-check`, run by CI, installs the wheel in a clean venv; this test builds without the
network: the shared venv's setuptools and grpcio-tools, no build isolation.)"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile

from taskhub.v1 import task_pb2 as pb

from client import make_spec
from conftest import REPO, ServerProcess, http

NEEDED = ["taskhub/__init__.py", "taskhub/v1/task_pb2.py", "taskhub/v1/task_service_pb2_grpc.py",
          "taskhub/descriptors.binpb", "gateway/ui/index.html", "gateway/ui/app.js", "client/cli.py",
          "server/app.py", "server/examples/starter/examples.py", "server/examples/starter/helloworld/auto.py"]


def test_sdist_and_wheel_from_a_fresh_clone_carry_the_generated_code(tmp_path, monkeypatch):
    clone = tmp_path / "clone"  # the tracked files (as they are in this tree), no build/
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_bytes((REPO / name).read_bytes())
    assert not (clone / "build").exists()
    build = "from setuptools import build_meta as b; print('BUILT', b.build_sdist('dist'), b.build_wheel('dist'))"
    out = subprocess.run([sys.executable, "-c", build], cwd=clone, capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr[-3000:]
    sdist_name, wheel_name = next(ln for ln in out.stdout.splitlines() if ln.startswith("BUILT ")).split()[1:]
    with tarfile.open(clone / "dist" / sdist_name) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"build/gen/" + n for n in NEEDED if n.startswith("taskhub/")} <= names
    assert {"protos/taskhub/v1/task.proto", "generate_stubs.py", "setup.py"} <= names
    installed = tmp_path / "installed"
    with zipfile.ZipFile(clone / "dist" / wheel_name) as wheel:
        names = set(wheel.namelist())
        assert set(NEEDED) <= names, sorted(set(NEEDED) - names)
        assert not any(n.startswith(("build/", "tests/")) for n in names)
        wheel.extractall(installed)

    # The wheel's code alone (the source tree is not on the path) serves and runs a task.
    monkeypatch.setenv("PYTHONPATH", str(installed))
    home = tmp_path / "home"
    home.mkdir()
    where = subprocess.run([sys.executable, "-c", "import server.app, taskhub; print(server.app.__file__,"
                            " taskhub.__path__[0])"], cwd=home, capture_output=True, text=True, check=True)
    assert all(p.startswith(str(installed)) for p in where.stdout.split()), where.stdout
    server = ServerProcess(home, ["--http-port", "0"])
    server.args = server.args[:server.args.index("--allow-module")] + ["--kill-grace", "1", "--http-port", "0"]
    try:
        server.start()
        c = server.client()
        t = c.create_task(make_spec(callable="starter.examples:count", input={"n": 2}))
        assert c.wait(t.id).status == pb.TASK_STATUS_SUCCESS, server.output
        assert http("GET", server.http_url + "/ui/").status == 200
    finally:
        server.close()
