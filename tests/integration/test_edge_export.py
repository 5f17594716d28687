"""ONNX export round trip: checker, metadata, parity with PyTorch, torch-free runtime, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image

from client.edge import cli
from client.edge.runtime import EdgeModel, EpisodeInputError
from client.edge.verify import RollbackError, VerificationError
from free_common import signing
from free_common.export import ExportLimits, ExportRequest, HeadConfig, export_bundle
from free_common.export.reference import reference_logits
from free_common.models import Classifier, ModelSpec, build_model

pytestmark = pytest.mark.integration

SPEC = ModelSpec("conv4", in_channels=1, image_size=16, width=8)
HEADS = {"proto": HeadConfig("proto"), "protomaml": HeadConfig("protomaml", steps=3, lr=0.5)}
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Exported:
    root: Path
    model: Classifier
    public: Ed25519PublicKey
    bundles: dict[str, Path]

    def key_file(self) -> str:
        return str(self.root / "key.pub")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("edge")
    pem, raw = signing.generate_keypair()
    (root / "key.pub").write_bytes(raw)
    model = build_model(SPEC, batch_stats=True)
    key = signing.load_private_key(pem)
    limits = ExportLimits(max_ways=20, max_shots=10, max_queries=100)
    bundles = {
        kind: export_bundle(model, SPEC, ExportRequest("tiny", 2, head, limits=limits), key, root)
        for kind, head in HEADS.items()
    }
    return Exported(root, model, signing.load_public_key(raw), bundles)


def _episode(n_way: int, k_shot: int, n_query: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    support = rng.random((n_way * k_shot, 1, 16, 16), dtype=np.float32)
    labels = np.tile(np.arange(n_way), k_shot)
    return support, labels, rng.random((n_query, 1, 16, 16), dtype=np.float32)


@pytest.mark.parametrize("kind", list(HEADS))
def test_file_is_self_contained_checked_and_clean(exported: Exported, kind: str) -> None:
    data = (exported.bundles[kind] / "model.onnx").read_bytes()
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert not any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer
    )
    for needle in (b"/work", b"/root", b"Traceback", b".py"):
        assert needle not in data
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["free.layout"] == "NCHW" and meta["free.pixel_range"] == "[0,1]"
    assert meta["free.normalisation"] == "in_graph" and meta["free.bn_mode"] == "support_stats"
    assert meta["free.head"] == kind and meta["free.version.opset"] == "18"
    assert json.loads(meta["free.norm_mean"]) == [0.5] and meta["free.max_ways"] == "20"
    assert model.model_version == 2


@pytest.mark.parametrize("kind", list(HEADS))
@pytest.mark.parametrize(
    ("n_way", "k_shot", "n_query"), [(5, 1, 1), (5, 5, 75), (20, 1, 7), (3, 10, 2)]
)
def test_onnx_matches_pytorch_reference(
    exported: Exported, kind: str, n_way: int, k_shot: int, n_query: int
) -> None:
    edge = EdgeModel.from_bundle(exported.bundles[kind], exported.public)
    support, labels, query = _episode(n_way, k_shot, n_query, seed=n_way + k_shot)
    logits = edge.logits(support, labels, query)
    ref = reference_logits(
        exported.model,
        torch.from_numpy(support),
        torch.from_numpy(labels),
        torch.from_numpy(query),
        n_way,
        HEADS[kind],
    ).numpy()
    assert logits.shape == (n_query, n_way)
    assert np.abs(logits - ref).max() <= 1e-4
    assert (logits.argmax(1) == ref.argmax(1)).all()


def test_runtime_refuses_bad_inputs(exported: Exported) -> None:
    edge = EdgeModel.from_bundle(exported.bundles["proto"], exported.public)
    support, labels, query = _episode(3, 2, 4, seed=0)
    with pytest.raises(EpisodeInputError, match="shape"):
        edge.logits(support[:, :, :8], labels, query)
    with pytest.raises(EpisodeInputError, match=r"\[0, 1\]"):
        edge.logits(support * 300, labels, query)
    with pytest.raises(EpisodeInputError, match="each class needs"):
        edge.logits(support, labels + 1, query)
    with pytest.raises(EpisodeInputError, match="allowed"):
        edge.logits(support, labels, np.zeros((101, 1, 16, 16), np.float32))


def test_rollback_and_tampered_model_are_refused(exported: Exported) -> None:
    with pytest.raises(RollbackError):
        EdgeModel.from_bundle(exported.bundles["proto"], exported.public, min_version=3)
    tampered = exported.root / "tampered"
    tampered.mkdir()
    for name in ("model.onnx", "manifest.binpb", "manifest.sig"):
        (tampered / name).write_bytes((exported.bundles["proto"] / name).read_bytes())
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="SHA-256"):
        EdgeModel.from_bundle(tampered, exported.public)


_BLOCKED_TORCH_SCRIPT = """
import importlib.abc, json, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked on the edge")
sys.meta_path.insert(0, BlockTorch())
import numpy as np
import client.edge.cli  # the whole edge package: CLI, hub client, datasets, images
from client.edge.runtime import EdgeModel
from client.edge.verify import load_public_key_file
args = json.loads(sys.argv[1])
model = EdgeModel.from_bundle(args["bundle"], load_public_key_file(args["key"]))
ep = np.load(args["episode"])
logits = model.logits(ep["support"], ep["labels"], ep["query"])
np.save(args["out"], logits)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print("torch-free ok")
"""


@pytest.mark.parametrize("kind", list(HEADS))
def test_edge_runtime_runs_with_torch_blocked(exported: Exported, kind: str) -> None:
    root: Path = exported.root
    support, labels, query = _episode(5, 2, 6, seed=3)
    np.savez(root / "episode.npz", support=support, labels=labels, query=query)
    args = {
        "bundle": str(exported.bundles[kind]),
        "key": str(root / "key.pub"),
        "episode": str(root / "episode.npz"),
        "out": str(root / f"logits-{kind}.npy"),
    }
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKED_TORCH_SCRIPT, json.dumps(args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "torch-free ok" in result.stdout
    expected = EdgeModel.from_bundle(exported.bundles[kind], exported.public).logits(
        support, labels, query
    )
    np.testing.assert_allclose(np.load(root / f"logits-{kind}.npy"), expected, atol=1e-6)


def test_cli_classify_prints_label_and_score(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    support_dir = tmp_path / "support"
    for name, value in (("dark", 20), ("light", 235)):
        (support_dir / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (16, 16), value + i).save(support_dir / name / f"{i}.png")
    Image.new("L", (20, 20), 230).save(tmp_path / "q.png")
    key = exported.key_file()
    code = cli.main(
        ["classify", "--bundle", str(exported.bundles["protomaml"]), "--public-key", key,
         "--support", str(support_dir), str(tmp_path / "q.png")]
    )  # fmt: skip
    out = capsys.readouterr().out.strip().split("\t")
    assert code == 0
    assert out[0].endswith("q.png") and out[1] == "light" and 0.5 < float(out[2]) <= 1.0


def test_cli_verify_refuses_tampered_manifest(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("model.onnx", "manifest.binpb", "manifest.sig"):
        (tmp_path / name).write_bytes((exported.bundles["proto"] / name).read_bytes())
    manifest = bytearray((tmp_path / "manifest.binpb").read_bytes())
    manifest[5] ^= 0x40
    (tmp_path / "manifest.binpb").write_bytes(bytes(manifest))
    key = exported.key_file()
    assert cli.main(["verify", "--bundle", str(tmp_path), "--public-key", key]) == 2
    assert "signature" in capsys.readouterr().err


def test_export_cli_from_free_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a checkpoint as server.free_training writes it
    from free_common.config import FreeConfig
    from free_common.export.__main__ import main as export_main
    from free_common.free.meta_learner import build_meta_learner

    config = FreeConfig.preset("test")
    learner = build_meta_learner(config.meta_learner)
    torch.save({"config": config.to_dict(), "learner": learner.state_dict()}, tmp_path / "ck.pt")
    pem, raw = signing.generate_keypair()
    (tmp_path / "key.pem").write_bytes(pem)
    (tmp_path / "key.pub").write_bytes(raw)
    # Execute
    code = export_main(
        ["--checkpoint", str(tmp_path / "ck.pt"), "--private-key", str(tmp_path / "key.pem"),
         "--export-dir", str(tmp_path / "exports"), "--version", "4", "--heads", "proto"]
    )  # fmt: skip
    # Assert
    bundle = Path(capsys.readouterr().out.strip())
    assert code == 0 and bundle.name == "free-conv4-proto-v4"
    edge = EdgeModel.from_bundle(bundle, signing.load_public_key(raw), min_version=4)
    assert edge.image_shape == (1, 16, 16)


def test_int8_variant_is_gated_on_meta_val(exported: Exported) -> None:
    from free_common.export.int8_release import decide_int8

    fp32 = (exported.bundles["proto"] / "model.onnx").read_bytes()
    decision = decide_int8(
        fp32, SPEC, "glyphs", calibration_episodes=2, gate_episodes=3, latency_runs=5
    )
    model = onnx.load_from_string(decision.onnx)
    onnx.checker.check_model(model, full_check=True)
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert {p.key: p.value for p in model.metadata_props}["free.variant"] == "proto-int8"
    assert 0.0 <= decision.int8_accuracy <= 1.0 and decision.episodes == 3
    assert decision.fp32_latency_ms > 0 and decision.int8_latency_ms > 0
    faster = decision.int8_latency_ms < decision.fp32_latency_ms
    assert decision.ship == (decision.within_tolerance and faster)
