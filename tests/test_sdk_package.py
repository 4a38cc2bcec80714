"""The SDK ships without the server: the taskhub-client wheel (packaging/sdk) holds client/ and the
generated stubs only, and works from the wheel alone, with `server` and `gateway` unimportable."""
from __future__ import annotations

import subprocess
import sys
import zipfile

from conftest import REPO

sys.path.insert(0, str(REPO / "packaging" / "sdk"))
import build as sdk_build  # noqa: E402 - packaging/sdk/build.py

# Runs in a fresh interpreter: the wheel first on sys.path, server/ and gateway/ refused.
ALONE = r"""
import importlib, pkgutil, sys
wheel, target = sys.argv[1], sys.argv[2]

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("server", "gateway"):
            raise ImportError(f"{name} is not part of the SDK")
        return None

sys.meta_path.insert(0, Refuse())
sys.path.insert(0, wheel)
import client
assert client.__file__.startswith(wheel), client.__file__
for m in pkgutil.iter_modules(client.__path__):
    importlib.import_module("client." + m.name)
from client import TaskhubClient
with TaskhubClient(target) as c:
    t = c.create_task(argv=["echo", "from the wheel"])
    from client import status_name
    assert status_name(c.wait(t.id).status) == "SUCCESS", c.get_task(t.id)
from client.cli import main
sys.exit(main(["task", "--server", target, "trace", str(t.id)]))
"""


def test_sdk_wheel_holds_only_the_client_and_runs_without_the_server(server, tmp_path):
    wheel = sdk_build.build(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"client", "taskhub", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "taskhub/v1/task_service_pb2_grpc.py" in names and "client/cli.py" in names
    proc = subprocess.run([sys.executable, "-I", "-c", ALONE, str(wheel), server.grpc_target],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "from the wheel" in proc.stdout


def test_client_only_command_says_where_the_agent_is():
    proc = subprocess.run([sys.executable, "-m", "client.cli", "node"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "the node agent comes with the server" in proc.stderr
