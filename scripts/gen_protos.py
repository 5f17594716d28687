"""Compile every ``.proto`` under ``protos/`` into committed Python code.

Generated files (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``, ``*_pb2_grpc.pyi``) land next to
the package path of their source, e.g. ``protos/free_common/proto/v1/hub.proto`` becomes
``free_common/proto/v1/hub_pb2.py``, so imports read ``free_common.proto.v1.hub_pb2``.

Usage::

    python -m scripts.gen_protos            # regenerate in place
    python -m scripts.gen_protos --check    # regenerate into a temp dir, fail on drift
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


class ProtoGenError(RuntimeError):
    """protoc failed, a plugin is missing, or the committed code drifted."""


def find_protos(root: Path = PROTO_ROOT) -> list[Path]:
    """Every ``.proto`` below ``root``, relative to it, sorted."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed next to the running interpreter (or on PATH)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise ProtoGenError(f"protoc plugin {name!r} not found: install mypy-protobuf")
    return found


def generate(out_dir: Path, root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc on every proto under ``root`` writing into ``out_dir``.

    Returns:
        The generated files, relative to ``out_dir``.
    """
    protos = find_protos(root)
    if not protos:
        raise ProtoGenError(f"no .proto files under {root}")
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise ProtoGenError(f"protoc failed on {', '.join(map(str, protos))}")
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*") if p.is_file())


def _committed(repo: Path, root: Path) -> set[Path]:
    """Generated-looking files currently in the package dirs that mirror ``root``."""
    dirs = {(repo / p.parent) for p in find_protos(root)}
    return {
        f.relative_to(repo)
        for d in dirs
        if d.is_dir()
        for f in d.iterdir()
        if f.name.endswith(GENERATED_SUFFIXES)
    }


def drift(repo: Path = REPO, root: Path = PROTO_ROOT) -> list[str]:
    """Regenerate into a temp dir and list the differences with the committed files."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), root)
        problems = []
        for rel in fresh:
            target = repo / rel
            if not target.exists():
                problems.append(f"missing: {rel}")
            elif not filecmp.cmp(Path(tmp) / rel, target, shallow=False):
                problems.append(f"out of date: {rel}")
        stale = sorted(_committed(repo, root) - set(fresh))
        problems += [f"stale (no .proto): {rel}" for rel in stale]
    return problems


def write(repo: Path = REPO, root: Path = PROTO_ROOT) -> list[Path]:
    """Regenerate in place, add missing package ``__init__.py`` files, drop stale outputs."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp), root)
        for rel in fresh:
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / rel, repo / rel)
    for stale in _committed(repo, root) - set(fresh):
        logger.info("removing stale %s", stale)
        (repo / stale).unlink()
    for rel in fresh:
        for pkg in rel.parents:
            init = repo / pkg / "__init__.py"
            if pkg != Path(".") and not init.exists():
                init.write_text('"""Generated protobuf code (scripts/gen_protos.py)."""\n')
    return fresh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code drifted")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        problems = drift()
        for line in problems:
            logger.error("%s", line)
        if problems:
            logger.error("generated protobuf code drifted: run python -m scripts.gen_protos")
            return 1
        logger.info("generated protobuf code is up to date")
        return 0
    for rel in write():
        logger.info("wrote %s", rel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
