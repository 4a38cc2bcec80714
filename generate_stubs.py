"""Generate taskhub's gRPC stubs and descriptor set from protos/ (never committed, never edited).

One generator for every way the code is built: `make proto` runs it for development, and the
build backend (setup.py) runs it before packaging, so `pip install .`, `pip install git+...`,
`pipx install` and `python -m build` work from a fresh clone, and the sdist and the wheel carry
the generated code. Needs grpcio-tools and googleapis-common-protos (build requirements).
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
PROTOS = os.path.join(ROOT, "protos")
DEFAULT_OUT = os.path.join(ROOT, "build", "gen")


def proto_files() -> list[str]:
    folder = os.path.join(PROTOS, "taskhub", "v1")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".proto"))


def up_to_date(out: str) -> bool:
    """The stubs exist and are newer than every proto (or the protos are not here: an sdist's stubs)."""
    marker = os.path.join(out, "taskhub", "descriptors.binpb")
    if not os.path.exists(marker):
        return False
    if not os.path.isdir(PROTOS):
        return True
    return os.path.getmtime(marker) >= max(os.path.getmtime(p) for p in proto_files())


def generate(out: str = DEFAULT_OUT) -> None:
    import shutil

    import google.api
    from grpc_tools import protoc
    common = os.path.dirname(os.path.dirname(list(google.api.__path__)[0]))  # googleapis-common-protos
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "taskhub"))
    args = ["protoc", f"-I{PROTOS}", f"-I{common}", f"-I{os.path.dirname(protoc.__file__)}/_proto",
            f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", "--include_source_info",
            "--include_imports", f"--descriptor_set_out={os.path.join(out, 'taskhub', 'descriptors.binpb')}",
            *[os.path.relpath(p, PROTOS) for p in proto_files()]]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")
    for pkg in ("taskhub", os.path.join("taskhub", "v1")):
        open(os.path.join(out, pkg, "__init__.py"), "a").close()


def ensure(out: str = DEFAULT_OUT) -> None:
    if not up_to_date(out):
        generate(out)


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT)
