"""Build the SDK's wheel (taskhub-client) from this tree: stage client/ and the generated stubs
(build/gen/taskhub, from `make proto`) beside packaging/sdk/pyproject.toml, then build it.

    python packaging/sdk/build.py [OUT_DIR]      # default dist/; prints the wheel's path
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def build(out_dir: Path) -> Path:
    stubs = REPO / "build" / "gen" / "taskhub"
    if not (stubs / "v1").is_dir():
        raise SystemExit("sdk: no generated stubs in build/gen; run `make proto` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    with tempfile.TemporaryDirectory(prefix="taskhub-sdk-") as stage:
        stage = Path(stage)
        shutil.copy(HERE / "pyproject.toml", stage)
        shutil.copytree(REPO / "client", stage / "client", ignore=ignore)
        shutil.copytree(stubs, stage / "taskhub", ignore=ignore)
        before = set(out_dir.glob("taskhub_client-*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out_dir), str(stage)], check=True)
    wheels = sorted(out_dir.glob("taskhub_client-*.whl"), key=lambda p: p.stat().st_mtime)
    new = [w for w in wheels if w not in before] or wheels[-1:]
    return new[-1]


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "dist"))
