"""Edge benchmark: ONNX vs PyTorch parity, latency, on-device vs server accuracy, int8.

The shipped ``proto`` variant is the fastest of fp32 and int8 whose glyph meta-val accuracy
stays within 1 point of fp32 (:func:`free_common.export.int8_release.shipped_variant`, the
rule ``python -m free_common.export --int8`` applies), latency measured on this machine; the
headline line reports it.

Usage::

    python -m scripts.bench.edge --preset quick                 # < 5 min on 2 CPU cores
    python -m scripts.bench.edge --preset full --checkpoint runs/free/checkpoint.pt

Without ``--checkpoint`` the backbone is a Conv4 briefly trained as a prototypical network
on glyph meta-train (same support-statistics BatchNorm rule as the export), a stand-in for
the FREE meta-learner. Every variant is exported, signed, verified and loaded from the
verified bytes exactly as on a device; edge (ONNX Runtime, 2 intra-op threads) and server
(PyTorch reference of the same rule) run the same glyph meta-test episodes.

Writes ``scripts/results/edge.json``, ``edge.md`` and ``edge.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.edge.datasets import EdgeEpisode, accuracy_ci95, load_glyph_split, sample_episodes
from client.edge.runtime import EdgeModel
from client.edge.verify import verify_bundle
from free_common import signing
from free_common.export import ExportLimits, ExportRequest, HeadConfig, build_bundle
from free_common.export.checkpoint import load_meta_learner
from free_common.export.int8_release import VariantMeasure, shipped_variant
from free_common.export.manifest import Bundle
from free_common.export.pipeline import derive_bundle
from free_common.export.quantize import quantize_conv_int8
from free_common.export.reference import reference_logits, support_stats_batchnorm
from free_common.models import Classifier, ModelSpec, build_model

logger = logging.getLogger("bench_edge")

RESULTS = Path(__file__).resolve().parents[1] / "results"
N_WAY, K_SHOT, Q_PER_CLASS, THREADS = 5, 5, 15, 2
GOAL_P50_MS = 10.0
MODEL_NAME = "free-conv4"


@dataclass(frozen=True)
class Preset:
    """Sizes of one benchmark run."""

    train_episodes: int
    eval_episodes: int
    latency_runs: int
    warmup_runs: int
    calibration_episodes: int
    gate_episodes: int = 100
    adapt_steps: int = 5
    adapt_lr: float = 0.5
    seed: int = 0


PRESETS = {
    "quick": Preset(
        train_episodes=100,
        eval_episodes=100,
        latency_runs=60,
        warmup_runs=10,
        calibration_episodes=16,
    ),
    "full": Preset(
        train_episodes=2000,
        eval_episodes=600,
        latency_runs=300,
        warmup_runs=30,
        calibration_episodes=64,
        gate_episodes=300,
    ),
}


def _torch_episode(ep: EdgeEpisode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(ep.support),
        torch.from_numpy(ep.support_labels),
        torch.from_numpy(ep.query),
    )


def train_protonet(model: Classifier, preset: Preset) -> None:
    """Brief prototypical-network training on glyph meta-train, support-statistics BN."""
    data = load_glyph_split(split="train")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    scale = 1.0 / model.num_features
    model.train()
    episodes = sample_episodes(
        data,
        n_way=N_WAY,
        k_shot=K_SHOT,
        q_query=5,
        episodes=preset.train_episodes,
        seed=preset.seed + 1,
        channels=model.spec.in_channels,
        size=model.spec.image_size,
    )
    for i, ep in enumerate(episodes):
        support, labels, query = _torch_episode(ep)
        with support_stats_batchnorm(model) as phase:
            support_f = model.forward_features(support)
            phase["record"] = False
            query_f = model.forward_features(query)
        onehot = F.one_hot(labels, N_WAY).float()
        protos = onehot.T @ support_f / onehot.sum(0, keepdim=True).T
        logits = -scale * torch.cdist(query_f, protos).pow(2)
        loss = F.cross_entropy(logits, torch.from_numpy(ep.query_labels))
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        if i % 100 == 0:
            logger.info("protonet episode %d: loss %.3f", i, loss.item())
    model.eval()


def _episodes(split: str, count: int, seed: int, spec: ModelSpec) -> list[EdgeEpisode]:
    return list(
        sample_episodes(
            load_glyph_split(split=split),
            n_way=N_WAY,
            k_shot=K_SHOT,
            q_query=Q_PER_CLASS,
            episodes=count,
            seed=seed,
            channels=spec.in_channels,
            size=spec.image_size,
        )
    )


def latency_ms(
    edge: EdgeModel, ep: EdgeEpisode, runs: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Wall and process-CPU milliseconds of ``edge.logits`` on one episode, after warm-up.

    CPU time (summed over ORT's threads) is robust to other processes loading the machine;
    wall time is what a user waits.
    """
    for _ in range(warmup):
        edge.logits(ep.support, ep.support_labels, ep.query)
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        edge.logits(ep.support, ep.support_labels, ep.query)
        wall.append(1000.0 * (time.perf_counter() - start))
        cpu.append(1000.0 * (time.process_time() - start_cpu))
    return wall, cpu


def compare(
    edge: EdgeModel, model: Classifier, head: HeadConfig, episodes: list[EdgeEpisode]
) -> dict[str, Any]:
    """Edge vs server (PyTorch reference) on the same episodes."""
    edge_acc, server_acc, agree, max_diff = [], [], [], 0.0
    scatter: list[tuple[float, float]] = []
    for ep in episodes:
        edge_logits = edge.logits(ep.support, ep.support_labels, ep.query)
        support, labels, query = _torch_episode(ep)
        ref = reference_logits(model, support, labels, query, N_WAY, head).numpy()
        edge_acc.append(float((edge_logits.argmax(1) == ep.query_labels).mean()))
        server_acc.append(float((ref.argmax(1) == ep.query_labels).mean()))
        agree.append(float((edge_logits.argmax(1) == ref.argmax(1)).mean()))
        max_diff = max(max_diff, float(np.abs(edge_logits - ref).max()))
        if len(scatter) < 2000:
            scatter += list(zip(ref.ravel().tolist(), edge_logits.ravel().tolist(), strict=True))
    (edge_mean, edge_ci), (server_mean, server_ci) = (
        accuracy_ci95(edge_acc),
        accuracy_ci95(server_acc),
    )
    return {
        "edge_accuracy": edge_mean,
        "edge_ci95": edge_ci,
        "server_accuracy": server_mean,
        "server_ci95": server_ci,
        "argmax_agreement": float(np.mean(agree)),
        "max_abs_logit_diff": max_diff,
        "_scatter": scatter,
    }


def _edge_model(bundle: Bundle, public: Ed25519PublicKey) -> EdgeModel:
    verified = verify_bundle(bundle.onnx, bundle.manifest, bundle.signature, public)
    return EdgeModel(verified, threads=THREADS)


def _edge_accuracy(edge: EdgeModel, episodes: list[EdgeEpisode]) -> float:
    """Mean query accuracy of ``edge`` on ``episodes``."""
    return float(
        np.mean(
            [
                (edge.logits(ep.support, ep.support_labels, ep.query).argmax(1) == ep.query_labels)
                .astype(np.float64)
                .mean()
                for ep in episodes
            ]
        )
    )


def _calibration_feeds(spec: ModelSpec, preset: Preset) -> list[dict[str, np.ndarray]]:
    """Calibration inputs from meta-TRAIN episodes (never meta-test)."""
    return [
        {
            "support": ep.support,
            "support_onehot": np.eye(N_WAY, dtype=np.float32)[ep.support_labels],
            "query": ep.query,
        }
        for ep in _episodes("train", preset.calibration_episodes, preset.seed + 2, spec)
    ]


def run(preset: Preset, checkpoint: Path | None) -> dict[str, Any]:
    """The whole benchmark; returns the JSON-ready report (plus private plotting data)."""
    torch.manual_seed(preset.seed)
    start = time.perf_counter()
    if checkpoint is not None:
        model, source = load_meta_learner(checkpoint), f"checkpoint {checkpoint.name}"
    else:
        model = build_model(ModelSpec("conv4", width=32), batch_stats=True)
        train_protonet(model, preset)
        source = f"protonet stand-in, {preset.train_episodes} glyph meta-train episodes"
    spec = model.spec
    pem, raw = signing.generate_keypair()
    private, public = signing.load_private_key(pem), signing.load_public_key(raw)
    heads = {
        "proto": HeadConfig("proto"),
        "protomaml": HeadConfig("protomaml", steps=preset.adapt_steps, lr=preset.adapt_lr),
    }
    limits = ExportLimits()
    bundles = {
        name: build_bundle(
            model, spec, ExportRequest("free-conv4", 1, head, limits=limits), private
        )
        for name, head in heads.items()
    }
    episodes = _episodes("test", preset.eval_episodes, preset.seed + 3, spec)
    variants: dict[str, dict[str, Any]] = {}
    for name, head in heads.items():
        edge = _edge_model(bundles[name], public)
        variants[name] = compare(edge, model, head, episodes)
        lat, cpu = latency_ms(edge, episodes[0], preset.latency_runs, preset.warmup_runs)
        variants[name].update(
            _latency_stats(lat, cpu), onnx_bytes=len(bundles[name].onnx), _lat=lat
        )
        logger.info("%s: %s", name, _brief(variants[name]))
    int8 = quantize_conv_int8(bundles["proto"].onnx, _calibration_feeds(spec, preset), "proto-int8")
    int8_bundle = derive_bundle(bundles["proto"], int8, "proto-int8", private)
    edge8 = _edge_model(int8_bundle, public)
    variants["proto-int8"] = compare(edge8, model, heads["proto"], episodes)
    lat8, cpu8 = latency_ms(edge8, episodes[0], preset.latency_runs, preset.warmup_runs)
    variants["proto-int8"].update(_latency_stats(lat8, cpu8), onnx_bytes=len(int8), _lat=lat8)
    logger.info("proto-int8: %s", _brief(variants["proto-int8"]))
    val = _episodes("val", preset.gate_episodes, preset.seed + 4, spec)
    edges = {"proto": _edge_model(bundles["proto"], public), "proto-int8": edge8}
    measures = {
        name: VariantMeasure(name, _edge_accuracy(edge, val), variants[name]["latency_ms_p50"])
        for name, edge in edges.items()
    }
    shipped = shipped_variant(measures["proto"], [measures["proto-int8"]]).name
    for name, measure in measures.items():
        variants[name]["val_accuracy"] = measure.val_accuracy
        variants[name]["shipped"] = name == shipped
    variants["proto-int8"]["val_accuracy_drop_vs_fp32"] = (
        measures["proto"].val_accuracy - measures["proto-int8"].val_accuracy
    )
    logger.info("shipped proto variant: %s", shipped)
    headline = variants[shipped]
    return {
        "preset": asdict(preset),
        "variant": shipped,
        "goal_latency_ms_p50": GOAL_P50_MS,
        "meets_latency_goal": bool(headline["latency_ms_p50"] <= GOAL_P50_MS),
        "gate_episodes": len(val),
        **{k: v for k, v in headline.items() if not k.startswith("_")},
        "parity_ok_all_fp32_variants": all(
            variants[v]["argmax_agreement"] == 1.0 and variants[v]["max_abs_logit_diff"] <= 1e-4
            for v in heads
        ),
        "n_episodes": len(episodes),
        "ways": N_WAY,
        "shots": K_SHOT,
        "queries": N_WAY * Q_PER_CLASS,
        "image": f"{spec.in_channels}x{spec.image_size}x{spec.image_size}",
        "dataset": "glyphs-v1 meta-test",
        "model": {"source": source, "spec": spec.to_dict(), "num_features": model.num_features},
        "variants": variants,
        "ort_intra_op_threads": THREADS,
        "machine": _machine(),
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "opset": 18,
        },
        "wall_s": time.perf_counter() - start,
    }


def _latency_stats(wall: list[float], cpu: list[float]) -> dict[str, float]:
    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {
        "latency_ms_p50": statistics.median(wall),
        "latency_ms_p95": pct(wall, 0.95),
        "latency_ms_min": min(wall),
        "cpu_ms_p50": statistics.median(cpu),
        "latency_runs": len(wall),
    }


def _brief(v: dict[str, Any]) -> str:
    return (
        f"edge {100 * v['edge_accuracy']:.2f}% server {100 * v['server_accuracy']:.2f}% "
        f"agree {v['argmax_agreement']:.4f} maxdiff {v['max_abs_logit_diff']:.2e} "
        f"p50 {v['latency_ms_p50']:.2f} ms"
    )


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }


def markdown(report: dict[str, Any]) -> str:
    """The human-readable table."""
    rows = [
        "| variant | edge acc (95% CI) | server acc (95% CI) | argmax agree | max abs diff "
        "| p50 ms | p95 ms | min ms | CPU ms p50 | ONNX bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in report["variants"].items():
        shipped = "" if "shipped" not in v else (" (shipped)" if v["shipped"] else " (not shipped)")
        rows.append(
            f"| {name}{shipped} | {100 * v['edge_accuracy']:.2f} ± {100 * v['edge_ci95']:.2f} "
            f"| {100 * v['server_accuracy']:.2f} ± {100 * v['server_ci95']:.2f} "
            f"| {v['argmax_agreement']:.4f} | {v['max_abs_logit_diff']:.1e} "
            f"| {v['latency_ms_p50']:.2f} | {v['latency_ms_p95']:.2f} | {v['latency_ms_min']:.2f} "
            f"| {v['cpu_ms_p50']:.2f} | {v['onnx_bytes']:,} |"
        )
    return (
        f"# Edge benchmark ({report['preset']['eval_episodes']} episodes, "
        f"{report['ways']}-way {report['shots']}-shot, {report['queries']} queries, "
        f"{report['image']}, {report['dataset']})\n\n"
        f"Model: {report['model']['source']}. ONNX Runtime {report['versions']['onnxruntime']}, "
        f"{report['ort_intra_op_threads']} intra-op threads, {report['machine']['processor']} "
        f"({report['machine']['cpu_count']} CPUs, load {report['machine']['load_avg_1m']:.1f}).\n\n"
        + "\n".join(rows)
        + "\n\nLatency: one episode (support + queries) per call, median over "
        f"{report['preset']['latency_runs']} runs after "
        f"{report['preset']['warmup_runs']} warm-up; CPU ms = process CPU time per call "
        "(all ORT threads), much less inflated than wall time by other load on a shared machine.\n"
        f"Shipped: {report['variant']}, the fastest proto variant within 1 point of fp32 on "
        f"{report['gate_episodes']} glyph meta-val episodes (meta-val accuracy: "
        + ", ".join(
            f"{name} {100 * v['val_accuracy']:.2f}%"
            for name, v in report["variants"].items()
            if "val_accuracy" in v
        )
        + ").\n"
    )


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency distribution per variant and the edge-vs-server logit scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(report["variants"])
    left.boxplot([report["variants"][n]["_lat"] for n in names], tick_labels=names)
    left.set_ylabel("ms per 5-way 5-shot episode (75 queries)")
    left.set_title(f"ONNX Runtime latency, {THREADS} threads")
    ref, edge = zip(*report["variants"]["protomaml"]["_scatter"], strict=True)
    right.scatter(ref, edge, s=3)
    right.set_xlabel("PyTorch reference logit")
    right.set_ylabel("ONNX Runtime logit")
    right.set_title("protomaml parity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--checkpoint", type=Path, help="FREE checkpoint with the meta-learner")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "free_common.export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(THREADS)
    report = run(PRESETS[args.preset], args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(report, args.out / "edge.png")
    (args.out / "edge.md").write_text(markdown(report))
    public = {k: v for k, v in report.items() if k != "variants"}
    public["variants"] = {
        name: {k: val for k, val in v.items() if not k.startswith("_")}
        for name, v in report["variants"].items()
    }
    (args.out / "edge.json").write_text(json.dumps(public, indent=2, sort_keys=True) + "\n")
    print(markdown(report))
    print(
        f"headline: shipped {report['variant']} p50 {report['latency_ms_p50']:.2f} ms "
        f"(goal <= {GOAL_P50_MS:g}), edge "
        f"{100 * report['edge_accuracy']:.2f}% vs server {100 * report['server_accuracy']:.2f}%, "
        f"parity ok: {report['parity_ok_all_fp32_variants']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
