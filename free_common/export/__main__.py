"""``python -m free_common.export``: export a meta-learner checkpoint as signed edge bundles.

Example::

    python -m free_common.export --checkpoint runs/free/checkpoint.pt
        --private-key server-ed25519.pem --export-dir runs/exports --version 3
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from free_common import signing
from free_common.export.checkpoint import load_meta_learner
from free_common.export.episode_graph import HEAD_KINDS, HeadConfig
from free_common.export.int8_release import decide_int8
from free_common.export.manifest import bundle_dir_name, write_bundle
from free_common.export.pipeline import ExportRequest, build_bundle, derive_bundle, export_bundle
from free_common.proto.v1 import export_pb2


def main(argv: list[str] | None = None) -> int:
    """Export one bundle per requested head; print the bundle folders."""
    parser = argparse.ArgumentParser(prog="python -m free_common.export", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--private-key", type=Path, required=True, help="Ed25519 PEM")
    parser.add_argument("--export-dir", type=Path, required=True)
    parser.add_argument("--version", type=int, required=True, help="model version (>= 1)")
    parser.add_argument("--model-name", default="free-conv4")
    parser.add_argument("--heads", nargs="+", choices=HEAD_KINDS, default=list(HEAD_KINDS))
    parser.add_argument("--adapt-steps", type=int, default=HeadConfig.steps)
    parser.add_argument("--adapt-lr", type=float, default=HeadConfig.lr)
    parser.add_argument(
        "--int8",
        metavar="DATASET",
        help="also build the Conv-int8 proto variant (calibrated on DATASET meta-train) and "
        "write it only if it ships: within 1 point of fp32 on DATASET meta-val and faster "
        "than fp32 on this machine",
    )
    parser.add_argument(
        "--keep-int8",
        action="store_true",
        help="with --int8: write the proto-int8 bundle even when fp32 ships",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = load_meta_learner(args.checkpoint)
    key = signing.load_private_key(args.private_key.read_bytes())
    for kind in args.heads:
        head = HeadConfig(kind, steps=args.adapt_steps, lr=args.adapt_lr)
        request = ExportRequest(args.model_name, args.version, head)
        print(export_bundle(model, model.spec, request, key, args.export_dir))
    if args.int8:
        request = ExportRequest(args.model_name, args.version, HeadConfig("proto"))
        fp32 = build_bundle(model, model.spec, request, key)
        decision = decide_int8(fp32.onnx, model.spec, args.int8)
        print(
            f"shipped proto variant: {decision.shipped} (meta-val fp32 "
            f"{100 * decision.fp32_accuracy:.2f}% {decision.fp32_latency_ms:.2f} ms, int8 "
            f"{100 * decision.int8_accuracy:.2f}% {decision.int8_latency_ms:.2f} ms)",
            file=sys.stderr,
        )
        if decision.ship or args.keep_int8:
            bundle = derive_bundle(fp32, decision.onnx, "proto-int8", key)
            manifest = export_pb2.ExportManifest.FromString(bundle.manifest)
            print(write_bundle(bundle, args.export_dir / bundle_dir_name(manifest)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
