"""`make wheel-check`: start `taskhub serve` from an installed wheel and ask gRPC health.

Run with the clean venv's python (only the wheel and its dependencies), from outside the
source tree: python wheel_health.py PATH/TO/venv/bin/taskhub. Exits 0 when the server answers
SERVING, else 1 with the server's output.
"""
import os
import re
import subprocess
import sys
import tempfile
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    taskhub = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen([taskhub, "serve", "--db", os.path.join(home, "taskhub.db"), "--grpc-port", "0",
                                 "--http-port", "0"], cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        output, ready = [], threading.Event()

        def pump():
            for line in proc.stdout:
                output.append(line.rstrip())
                if line.startswith("taskhub: database"):
                    ready.set()
            ready.set()
        threading.Thread(target=pump, daemon=True).start()
        try:
            ready.wait(120)
            target = next((m.group(1) for m in map(re.compile(r"gRPC listening on (\S+)").search, output) if m), "")
            if not target:
                raise RuntimeError("the server did not start")
            with grpc.insecure_channel(target) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30).status
            if status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError(f"health answered {status}")
            print(f"wheel-check: taskhub serve from the wheel answers health SERVING at {target}")
            return 0
        except Exception as e:
            print(f"wheel-check failed: {e}\n" + "\n".join(output), file=sys.stderr)
            return 1
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
