"""Hostile files at every path the verifier reads: refused with VerificationError, quickly.

Each case would hang (a named pipe) or read until memory runs out (``/dev/zero``) if the
verifier trusted ``stat``; the timeout marker turns such a regression into a failure.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from client.edge import cli
from client.edge.verify import (
    MANIFEST_FILE,
    MAX_KEY_FILE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_MODEL_BYTES,
    MODEL_FILE,
    SIGNATURE_FILE,
    VerificationError,
    load_public_key_file,
    read_bundle,
)
from free_common import signing
from free_common.export.manifest import write_bundle
from tests.edge_bundles import signed_bundle

pytestmark = pytest.mark.timeout(10)

PEM, RAW = signing.generate_keypair()
PRIVATE, PUBLIC = signing.load_private_key(PEM), signing.load_public_key(RAW)
LIMITS = {
    MODEL_FILE: MAX_MODEL_BYTES,
    MANIFEST_FILE: MAX_MANIFEST_BYTES,
    SIGNATURE_FILE: signing.SIGNATURE_BYTES,
    "key.pub": MAX_KEY_FILE_BYTES,
}
REFUSAL_SECONDS = 0.5


def _symlink_to(target: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.symlink_to(target)

    return make


def _symlink_loop(path: Path) -> None:
    other = path.with_name(path.name + ".loop")
    other.symlink_to(path.name)
    path.symlink_to(other.name)


def _oversized(path: Path) -> None:
    with path.open("wb") as out:  # sparse: no disk space used
        out.truncate(LIMITS[path.name] + 1)


HOSTILE: dict[str, Callable[[Path], None]] = {
    "dev-zero": _symlink_to("/dev/zero"),
    "dev-urandom": _symlink_to("/dev/urandom"),
    "fifo": os.mkfifo,
    "directory": Path.mkdir,
    "symlink-loop": _symlink_loop,
    "oversized": _oversized,
}


def _bundle(root: Path) -> Path:
    folder = write_bundle(signed_bundle(PRIVATE), root / "bundle")
    (root / "key.pub").write_bytes(RAW)
    return folder


def _replace(path: Path, kind: str) -> None:
    path.unlink()
    HOSTILE[kind](path)


def _refused_quickly(call: Callable[[], object], match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(VerificationError, match=match):
        call()
    assert time.perf_counter() - start < REFUSAL_SECONDS


def test_genuine_bundle_reads(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    assert read_bundle(folder, load_public_key_file(tmp_path / "key.pub")).manifest.model_version


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("name", [MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE])
def test_hostile_bundle_file_is_refused(tmp_path: Path, name: str, kind: str) -> None:
    folder = _bundle(tmp_path)
    _replace(folder / name, kind)
    _refused_quickly(lambda: read_bundle(folder, PUBLIC), name)


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_key_file_is_refused(tmp_path: Path, kind: str) -> None:
    _bundle(tmp_path)
    _replace(tmp_path / "key.pub", kind)
    _refused_quickly(lambda: load_public_key_file(tmp_path / "key.pub"), "key.pub")


@pytest.mark.parametrize("kind", ["fifo", "symlink-loop", "dev-zero"])
def test_hostile_bundle_folder_is_refused(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "bundle"
    HOSTILE[kind](folder)
    _refused_quickly(lambda: read_bundle(folder, PUBLIC), "bundle")


def test_missing_file_names_the_bundle(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    (folder / SIGNATURE_FILE).unlink()
    _refused_quickly(lambda: read_bundle(folder, PUBLIC), "incomplete bundle.*manifest.sig")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
@pytest.mark.parametrize("name", [MANIFEST_FILE, "key.pub"])
def test_cli_verify_refuses_hostile_file_with_exit_2(
    tmp_path: Path, name: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _bundle(tmp_path)
    _replace(tmp_path / name if name == "key.pub" else folder / name, kind)
    start = time.perf_counter()
    code = cli.main(["verify", "--bundle", str(folder), "--public-key", str(tmp_path / "key.pub")])
    assert code == 2 and time.perf_counter() - start < REFUSAL_SECONDS
    assert name in capsys.readouterr().err


def test_cli_refuses_a_ca_file_that_is_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "ca.pem")
    start = time.perf_counter()
    code = cli.main(["versions", "--hub", "127.0.0.1:9", "--ca", str(tmp_path / "ca.pem")])
    assert code == 2 and time.perf_counter() - start < REFUSAL_SECONDS


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_cli_classify_refuses_a_hostile_image(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _bundle(tmp_path)
    for name in ("a", "b"):
        (tmp_path / "support" / name).mkdir(parents=True)
        (tmp_path / "support" / name / "0.png").write_bytes(_png())
    HOSTILE[kind](tmp_path / "support" / "b" / "1.png")
    (tmp_path / "q.png").write_bytes(_png())
    code = cli.main(
        ["classify", "--bundle", str(folder), "--public-key", str(tmp_path / "key.pub"),
         "--support", str(tmp_path / "support"), str(tmp_path / "q.png")]
    )  # fmt: skip
    assert code == 2 and "1.png" in capsys.readouterr().err


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (4, 4), 128).save(out, format="PNG")
    return out.getvalue()
