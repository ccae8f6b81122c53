"""Regenerate the Python stubs in proto/avatar_proto/ from proto/avatar/v1/avatar.proto.

    python tools/gen_proto.py            # write the stubs
    python tools/gen_proto.py --check    # exit 1 if the committed stubs differ

The gRPC stub's absolute import is made package-relative so the stubs live in the
`avatar_proto` package without touching sys.path.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILE = "avatar/v1/avatar.proto"
PACKAGE_DIR = ROOT / "proto" / "avatar_proto"
STUBS = ("avatar_pb2.py", "avatar_pb2.pyi", "avatar_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            PROTO_FILE,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        generated = Path(tmp) / "avatar" / "v1"
        for name in STUBS:
            text = (generated / name).read_text()
            text = text.replace("from avatar.v1 import avatar_pb2", "from . import avatar_pb2")
            (out_dir / name).write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if not args.check:
        generate(PACKAGE_DIR)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [n for n in STUBS if (Path(tmp) / n).read_text() != (PACKAGE_DIR / n).read_text()]
    if stale:
        print(f"stale stubs: {', '.join(stale)}; run: python tools/gen_proto.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
