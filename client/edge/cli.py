"""Command line of the edge runtime: ``python -m client.edge <command> ...``.

Commands: ``verify`` a bundle, ``classify`` query images after adapting on a folder of
support images, ``evaluate`` on episodes of a benchmark's meta-test split or of a folder of
class folders, ``pull`` from the hub, ``versions`` on the hub. Every command verifies the
signed manifest before loading the model, and ``verify`` runs every check loading does (it
loads the model), so it never accepts a bundle that ``classify`` or ``evaluate`` would
refuse.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.edge.datasets import (
    DEFAULT_FASHION_ROOT,
    DEFAULT_GLYPHS,
    DEFAULT_ICONS,
    DataError,
    LabelledImages,
    accuracy_ci95,
    load_fashion_idx,
    load_image_folder,
    load_npz_split,
    sample_episodes,
)
from client.edge.hub_client import HubClient, HubError, ModelCache, pull
from client.edge.images import ImageReadError, list_images, load_image, load_support_folder
from client.edge.runtime import EdgeModel, EpisodeInputError
from client.edge.verify import VerificationError, load_public_key_file, read_limited
from free_common.proto.v1 import export_pb2

__all__ = ["build_parser", "main"]

logger = logging.getLogger("client.edge")

MAX_CA_BYTES = 1024 * 1024
DATASETS = ("glyphs", "icons", "fashion-mnist", "folder")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="bundle folder (model.onnx + manifest)")
    source.add_argument("--cache", type=Path, help="pull cache: use its newest verified model")
    parser.add_argument("--variant", default="proto", help="variant to take from --cache")
    parser.add_argument(
        "--public-key", type=Path, required=True, help="pinned server key (raw, hex or PEM)"
    )
    parser.add_argument("--min-version", type=int, default=0, help="refuse older models")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="python -m client.edge", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser("verify", help="verify a bundle and print its manifest")
    _add_model_args(verify)

    classify = sub.add_parser("classify", help="adapt on support folders, classify queries")
    _add_model_args(classify)
    classify.add_argument("--support", type=Path, required=True, help="folder/<class>/*.png")
    classify.add_argument("query", type=Path, nargs="+", help="query image files or folders")

    evaluate = sub.add_parser("evaluate", help="accuracy over meta-test episodes")
    _add_model_args(evaluate)
    evaluate.add_argument("--dataset", choices=DATASETS, default="glyphs")
    evaluate.add_argument(
        "--data",
        type=Path,
        help="glyphs/icons: the .npz (default: the package's); fashion-mnist: its IDX folder; "
        "folder: a folder of class folders (required)",
    )
    evaluate.add_argument("--ways", type=int, default=5)
    evaluate.add_argument("--shots", type=int, default=5)
    evaluate.add_argument("--queries", type=int, default=15, help="queries per class")
    evaluate.add_argument("--episodes", type=int, default=100)
    evaluate.add_argument("--seed", type=int, default=0)

    for name, text in (("pull", "fetch, verify and cache"), ("versions", "list hub exports")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--hub", required=True, help="host:port of the model hub")
        p.add_argument("--ca", type=Path, required=True, help="CA certificate of the hub (PEM)")
        p.add_argument("--variant", default="proto" if name == "pull" else "")
    pull_parser = sub.choices["pull"]
    pull_parser.add_argument("--cache", type=Path, required=True)
    pull_parser.add_argument("--public-key", type=Path, required=True)
    pull_parser.add_argument("--min-version", type=int, default=0)
    return parser


def _load_model(args: argparse.Namespace, key: Ed25519PublicKey) -> EdgeModel:
    if args.bundle is not None:
        return EdgeModel.from_bundle(
            args.bundle, key, min_version=args.min_version, threads=args.threads
        )
    return ModelCache(args.cache).load_newest(
        args.variant, key, min_version=args.min_version, threads=args.threads
    )


def _describe(m: export_pb2.ExportManifest) -> str:
    head = export_pb2.HeadKind.Name(m.head)
    return (
        f"{m.model_name}/{m.variant} v{m.model_version}  sha256 {m.onnx_sha256}  "
        f"{m.onnx_size} bytes  head {head}  input {m.input.channels}x{m.input.image_size}"
        f"x{m.input.image_size} NCHW [0,1]  key {m.key_id}"
    )


def _cmd_verify(args: argparse.Namespace, key: Ed25519PublicKey) -> int:
    model = _load_model(args, key)
    print(f"OK {_describe(model.manifest)}")
    if model.manifest.selection_json:  # signed: why the server shipped this model
        print(f"selection: {_selection_line(model.manifest.selection_json)}")
    return 0


def _selection_line(text: str) -> str:
    """The server's one-line meta-val verdict from a manifest's ``selection_json``."""
    try:
        line = json.loads(text).get("line", "")
    except (ValueError, AttributeError):
        line = ""
    return str(line) or f"unreadable selection record ({len(text)} characters)"


def _cmd_classify(args: argparse.Namespace, key: Ed25519PublicKey) -> int:
    model = _load_model(args, key)
    channels, size, _ = model.image_shape
    support = load_support_folder(args.support, channels, size)
    files = [f for q in args.query for f in list_images(q)]
    if not files:
        raise ImageReadError("no query images given")
    query = np.stack([load_image(f, channels, size) for f in files])
    pred = model.predict(support.images, support.labels, query)
    for path, label, score in zip(files, pred.labels, pred.scores, strict=True):
        print(f"{path}\t{support.class_names[label]}\t{score:.4f}")
    return 0


def _evaluation_data(args: argparse.Namespace, channels: int, size: int) -> LabelledImages:
    """The images ``evaluate`` samples episodes from (meta-test split of the benchmarks)."""
    if args.dataset == "folder":
        if args.data is None:
            raise DataError("--dataset folder needs --data DIR (a folder of class folders)")
        return load_image_folder(args.data, channels, size)
    if args.dataset == "fashion-mnist":
        return load_fashion_idx(args.data or DEFAULT_FASHION_ROOT)
    default = DEFAULT_GLYPHS if args.dataset == "glyphs" else DEFAULT_ICONS
    return load_npz_split(args.data or default, "test")


def _cmd_evaluate(args: argparse.Namespace, key: Ed25519PublicKey) -> int:
    model = _load_model(args, key)
    channels, size, _ = model.image_shape
    data = _evaluation_data(args, channels, size)
    accs, start = [], time.perf_counter()
    for ep in sample_episodes(
        data,
        n_way=args.ways,
        k_shot=args.shots,
        q_query=args.queries,
        episodes=args.episodes,
        seed=args.seed,
        channels=channels,
        size=size,
    ):
        pred = model.predict(ep.support, ep.support_labels, ep.query)
        accs.append(float((pred.labels == ep.query_labels).mean()))
    mean, half = accuracy_ci95(accs)
    print(
        f"{args.dataset} {args.ways}-way {args.shots}-shot, {args.episodes} episodes: "
        f"accuracy {100 * mean:.2f} +- {100 * half:.2f} % (95% CI) "
        f"[{model.manifest.variant} v{model.model_version}, {time.perf_counter() - start:.1f} s]"
    )
    return 0


def _cmd_pull(args: argparse.Namespace, key: Ed25519PublicKey) -> int:
    with HubClient(args.hub, read_limited(args.ca, MAX_CA_BYTES)) as client:
        result = pull(
            client, ModelCache(args.cache), key, args.variant, min_version=args.min_version
        )
    action = "downloaded" if result.downloaded else "already cached"
    print(f"{action}: {_describe(result.verified.manifest)} -> {result.path}")
    return 0


def _cmd_versions(args: argparse.Namespace) -> int:
    with HubClient(args.hub, read_limited(args.ca, MAX_CA_BYTES)) as client:
        for v in client.list_versions(args.variant):
            print(
                f"{v.model_name}\t{v.variant}\tv{v.model_version}\t{v.onnx_size}\t{v.onnx_sha256}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; return 0 on success, 2 on a refused model or bad input, 3 on hub errors."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "versions":
            return _cmd_versions(args)
        key = load_public_key_file(args.public_key)
        commands = {
            "verify": _cmd_verify,
            "classify": _cmd_classify,
            "evaluate": _cmd_evaluate,
            "pull": _cmd_pull,
        }
        return commands[args.command](args, key)
    except (VerificationError, EpisodeInputError, ImageReadError, DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except HubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
