"""Genuinely signed bundles that cannot run: ``verify`` and loading refuse exactly the same ones.

Every bundle here carries a valid signature from the server key over a correct hash, so only
the load-time checks (``client.edge.runtime.open_session``) can catch it. ``verify`` used to
check the manifest and hash only and printed OK for all of them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from client.edge import cli
from client.edge.runtime import EdgeModel
from client.edge.verify import VerificationError, verify_bundle
from free_common import signing
from free_common.export.manifest import Bundle, write_bundle
from tests.edge_bundles import TinyGraph, manifest, signed_bundle, tiny_model

PEM, RAW = signing.generate_keypair()
PRIVATE, PUBLIC = signing.load_private_key(PEM), signing.load_public_key(RAW)


def _no_episode_limits() -> Bundle:
    m = manifest()
    m.limits.max_ways = 0
    return signed_bundle(PRIVATE, m=m)


GOOD = tiny_model(TinyGraph())
UNLOADABLE: dict[str, tuple[Bundle, str]] = {
    "metadata-version": (
        signed_bundle(PRIVATE, tiny_model(TinyGraph(metadata_version="7"))),
        "version",
    ),
    "proto-version": (signed_bundle(PRIVATE, tiny_model(TinyGraph(proto_version=7))), "version"),
    "renamed-input": (
        signed_bundle(
            PRIVATE, tiny_model(TinyGraph(input_names=("support", "support_onehot", "queries")))
        ),
        "inputs",
    ),
    "reordered-inputs": (
        signed_bundle(
            PRIVATE, tiny_model(TinyGraph(input_names=("query", "support_onehot", "support")))
        ),
        "inputs",
    ),
    "extra-input": (signed_bundle(PRIVATE, tiny_model(TinyGraph(extra_input=True))), "inputs"),
    "renamed-output": (
        signed_bundle(PRIVATE, tiny_model(TinyGraph(output_name="scores"))),
        "outputs",
    ),
    "external-data": (
        signed_bundle(PRIVATE, tiny_model(TinyGraph(external_data="scale.bin"))),
        "external",
    ),
    "external-data-escaping": (
        signed_bundle(PRIVATE, tiny_model(TinyGraph(external_data="../../etc/passwd"))),
        "external",
    ),
    "not-onnx": (signed_bundle(PRIVATE, hashlib.sha512(b"x").digest() * 16), "ONNX"),
    "truncated-onnx": (signed_bundle(PRIVATE, GOOD[: len(GOOD) // 2]), "ONNX"),
    "empty-file": (signed_bundle(PRIVATE, b""), "ONNX"),
    "image-size": (signed_bundle(PRIVATE, tiny_model(TinyGraph(image_size=8))), "shape"),
    "no-episode-limits": (_no_episode_limits(), "limits"),
}


def _verified(bundle: Bundle) -> object:
    return verify_bundle(bundle.onnx, bundle.manifest, bundle.signature, PUBLIC)


def test_good_bundle_loads_and_runs() -> None:
    model = EdgeModel(verify_bundle(*_parts(signed_bundle(PRIVATE)), PUBLIC))
    support = np.random.default_rng(0).random((4, 1, 4, 4), dtype=np.float32)
    assert model.predict(support, np.array([0, 1, 0, 1]), support).logits.shape == (4, 2)


def _parts(bundle: Bundle) -> tuple[bytes, bytes, bytes]:
    return bundle.onnx, bundle.manifest, bundle.signature


@pytest.mark.parametrize("case", list(UNLOADABLE))
def test_signature_alone_accepts_the_case(case: str) -> None:
    bundle, _ = UNLOADABLE[case]
    assert verify_bundle(*_parts(bundle), PUBLIC).onnx_bytes == bundle.onnx


@pytest.mark.parametrize("case", list(UNLOADABLE))
def test_edge_model_refuses(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, match = UNLOADABLE[case]
    monkeypatch.chdir(tmp_path)  # external data would resolve here
    (tmp_path / "scale.bin").write_bytes(np.ones(1, np.float32).tobytes())
    with pytest.raises(VerificationError, match=match):
        EdgeModel(verify_bundle(*_parts(bundle), PUBLIC))


@pytest.mark.parametrize("case", list(UNLOADABLE))
def test_cli_verify_refuses_what_loading_refuses(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, match = UNLOADABLE[case]
    folder = write_bundle(bundle, tmp_path / "bundle")
    (tmp_path / "key.pub").write_bytes(RAW)
    code = cli.main(["verify", "--bundle", str(folder), "--public-key", str(tmp_path / "key.pub")])
    captured = capsys.readouterr()
    assert code == 2 and "OK" not in captured.out
    assert match in captured.err


def test_cli_verify_accepts_a_loadable_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_bundle(signed_bundle(PRIVATE), tmp_path / "bundle")
    (tmp_path / "key.pub").write_bytes(RAW)
    code = cli.main(["verify", "--bundle", str(folder), "--public-key", str(tmp_path / "key.pub")])
    assert code == 0 and capsys.readouterr().out.startswith("OK tiny/proto v1")
