"""Generate the Python code of proto/facemask/v1 into facemask/v1 (committed).

``--check`` regenerates into a temporary directory and fails when the committed files
differ (the CI drift check run by ``make lint``).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = Path("facemask/v1")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every .proto of the package; return the generated files."""
    protos = sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    for proto in protos:
        rel = proto.relative_to(PROTO_ROOT)
        code = protoc.main(
            [
                "protoc",
                f"-I{PROTO_ROOT}",
                f"-I{include}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                str(rel),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {rel}")
    return sorted(p for p in (out_dir / PACKAGE).glob("*_pb2*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code drifted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        names = {p.name for p in generated}
        committed = {p.name for p in (ROOT / PACKAGE).glob("*_pb2*.py*")}
        if args.check:
            drift = sorted(names ^ committed)
            drift += [
                n
                for n in sorted(names & committed)
                if not filecmp.cmp(Path(tmp) / PACKAGE / n, ROOT / PACKAGE / n, shallow=False)
            ]
            if drift:
                sys.stderr.write(
                    f"generated protobuf code is out of date: {', '.join(drift)}; "
                    "run `make proto` and commit the result\n"
                )
                return 1
            return 0
        for name in committed - names:
            (ROOT / PACKAGE / name).unlink()
        for path in generated:
            shutil.copyfile(path, ROOT / PACKAGE / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
