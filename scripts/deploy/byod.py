"""Bring your own data, end to end on loopback: three owners' folders, a held-out folder, the edge.

What it does (server/README.md, section "Bring your own data", explains each step):

1. writes demo data (unless given folders): three owners, each with a folder of its own
   classes (RGB images, sizes differing between and within owners), and a held-out folder
   of other classes split into ``val/`` and ``test/``;
2. makes the deployment material: a CA, the SuperLink's TLS certificate, one SuperNode key
   pair per owner (SuperNode authentication) and one Ed25519 signing key per owner, with the
   server's key registry;
3. starts a SuperLink with TLS and ``--enable-supernode-auth``, registers the SuperNode keys
   and starts one SuperNode per owner whose node config names its folder, owner id,
   signing key and input size;
4. runs the app with ``data.val`` / ``data.test`` naming the held-out folders;
5. evaluates the exported meta-learner on the held-out test folder with the edge CLI
   (``python -m client.edge evaluate --dataset folder``).

Usage::

    python -m scripts.deploy.byod --work-dir runs/byod
    python -m scripts.deploy.byod --owner-data A B C --val V --test T   # your own folders
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from free_common.data.sources import ASSETS_DIR
from scripts.deploy.local_deployment import REPO, LocalDeployment, owner_keys

logger = logging.getLogger("scripts.deploy.byod")

OWNER_IDS = ("hospital-a", "hospital-b", "hospital-c")
OWNER_SIDES = (32, 24, 40)
"""Each owner's input side (node config ``image-size``): the server adapts or refuses them."""
SHAPES = ("disc", "square", "triangle", "cross", "ring", "bar", "diamond", "stripes")
COLOURS = {
    "red": (200, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 200),
    "orange": (230, 140, 30),
    "purple": (130, 50, 170),
    "teal": (30, 150, 150),
}


@dataclass(frozen=True)
class DemoData:
    """Where the demo folders are."""

    owners: tuple[Path, ...]
    val: Path
    test: Path


def _draw(
    shape: str, colour: tuple[int, int, int], size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """One picture of a coloured shape on a noisy light background, placed and sized at random."""
    w, h = size
    background = rng.integers(170, 255, 3)
    noise = rng.integers(-25, 25, (h, w, 3))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    side = min(w, h)
    r = side * rng.uniform(0.22, 0.38)
    cx, cy = w / 2 + rng.uniform(-0.12, 0.12) * w, h / 2 + rng.uniform(-0.12, 0.12) * h
    turn = rng.uniform(0, 2 * math.pi)
    fill = tuple(int(v) for v in np.clip(np.array(colour) + rng.integers(-20, 20, 3), 0, 255))
    box = (cx - r, cy - r, cx + r, cy + r)
    width = max(2, int(r / 3))
    if shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=width)
    elif shape in ("square", "triangle", "diamond"):
        corners = {"square": 4, "triangle": 3, "diamond": 4}[shape]
        start = turn if shape != "diamond" else 0.0
        stretch = 0.6 if shape == "diamond" else 1.0
        points = [
            (cx + r * stretch * math.cos(start + 2 * math.pi * k / corners),
             cy + r * math.sin(start + 2 * math.pi * k / corners))
            for k in range(corners)
        ]  # fmt: skip
        draw.polygon(points, fill=fill)
    elif shape == "cross":
        draw.line((cx - r, cy, cx + r, cy), fill=fill, width=width)
        draw.line((cx, cy - r, cx, cy + r), fill=fill, width=width)
    elif shape == "bar":
        dx, dy = r * math.cos(turn), r * math.sin(turn)
        draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=fill, width=width + 2)
    else:  # stripes
        for k in (-1, 0, 1):
            y = cy + k * r * 0.6
            draw.line((cx - r, y, cx + r, y), fill=fill, width=max(1, width // 2 + 1))
    return image


def write_class_folders(
    root: Path,
    classes: list[tuple[str, str]],
    sizes: list[tuple[int, int]],
    per_class: int,
    seed: int,
) -> Path:
    """``root/<colour>-<shape>/<i>.png``: ``per_class`` images per class, sizes cycling."""
    rng = np.random.default_rng(seed)
    for colour, shape in classes:
        folder = root / f"{colour}-{shape}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _draw(shape, COLOURS[colour], sizes[i % len(sizes)], rng).save(folder / f"{i:03d}.png")
    return root


def write_demo_data(
    root: Path, *, classes_per_owner: int, held_out: int, per_class: int
) -> DemoData:
    """Three owners' folders and held-out ``val/`` and ``test/`` folders, all classes distinct."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    order = np.random.default_rng(20250101).permutation(len(pairs))
    needed = 3 * classes_per_owner + 2 * held_out
    if needed > len(pairs):
        raise ValueError(f"{needed} classes asked for, {len(pairs)} designs available")
    picked = [pairs[i] for i in order[:needed]]
    owner_sizes = ([(40, 40)], [(56, 48), (48, 56)], [(30, 30), (44, 44), (64, 64)])
    owners = []
    for k, sizes in enumerate(owner_sizes):
        chunk = picked[k * classes_per_owner : (k + 1) * classes_per_owner]
        owners.append(write_class_folders(root / OWNER_IDS[k], chunk, sizes, per_class, seed=k))
    rest = picked[3 * classes_per_owner :]
    mixed = [(36, 36), (50, 40), (64, 64)]
    val = write_class_folders(root / "held-out" / "val", rest[:held_out], mixed, per_class, seed=10)
    test = write_class_folders(root / "held-out" / "test", rest[held_out:], mixed, per_class, 11)
    return DemoData(tuple(owners), val, test)


def node_config(data: Path, owner_id: str, key: Path, side: int) -> str:
    """A SuperNode's ``--node-config``: its folder, owner id, signing key and input."""
    return (
        f'data-path="{data.resolve()}" owner-id="{owner_id}" signing-key="{key.resolve()}" '
        f'image-size={side} channels=3 arch="conv4"'
    )


def server_run_config(data: DemoData, out: Path, registry: Path, preset: str, extra: str) -> str:
    """The app's run config: the held-out folders as meta-val and meta-test, real owner keys."""
    return (
        f'preset="{preset}" data.train="none" data.val="folder:{data.val.resolve()}" '
        f'data.test="folder:{data.test.resolve()}" data.assets-dir="{ASSETS_DIR}" '
        f'out.dir="{out.resolve()}" fed.min-nodes=3 fed.min-replies=3 '
        f'fed.key-registry="{registry.resolve()}" fed.demo-key-secret="" {extra}'
    ).strip()


def edge_evaluate(
    out: Path, test: Path, ways: int, shots: int, queries: int, episodes: int
) -> list[str]:
    """The edge CLI command that evaluates the export on the held-out test folder."""
    export = out / "export"
    return [
        sys.executable, "-m", "client.edge", "evaluate",
        "--bundle", str(export / "free-conv4-proto-v1"),
        "--public-key", str(export / "server-ed25519.pub.hex"),
        "--dataset", "folder", "--data", str(test),
        "--ways", str(ways), "--shots", str(shots), "--queries", str(queries),
        "--episodes", str(episodes),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "byod")
    parser.add_argument("--owner-data", type=Path, nargs=3, help="three owners' class folders")
    parser.add_argument("--val", type=Path, help="held-out class folders for meta-val")
    parser.add_argument("--test", type=Path, help="held-out class folders for meta-test")
    parser.add_argument("--classes-per-owner", type=int, default=5)
    parser.add_argument("--held-out-classes", type=int, default=5)
    parser.add_argument("--images-per-class", type=int, default=20)
    parser.add_argument("--preset", default="xkd-cpu", help="FREE preset (test: tiny and quick)")
    parser.add_argument("--run-config", default="", help="more run config for the app")
    parser.add_argument("--ways", type=int, default=5, help="edge evaluation episodes' N")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = args.work_dir.resolve()
    if args.owner_data and args.val and args.test:
        data = DemoData(tuple(args.owner_data), args.val, args.test)
    elif args.owner_data or args.val or args.test:
        parser.error("give --owner-data, --val and --test together, or none (demo data)")
    else:
        data = write_demo_data(
            work / "data",
            classes_per_owner=args.classes_per_owner,
            held_out=args.held_out_classes,
            per_class=args.images_per_class,
        )
        logger.info(
            "demo data: owners %s, held-out %s", [str(p) for p in data.owners], data.val.parent
        )
    dep = LocalDeployment(work / "deploy")
    material = dep.make_material(len(OWNER_IDS))
    keys, registry = owner_keys(dep.work_dir / "owner-keys", list(OWNER_IDS))
    out = work / "out"
    with dep.running():
        dep.start_superlink()
        for _, public in material.supernode_keys:
            dep.register(public)
        for i, owner in enumerate(OWNER_IDS):
            dep.start_supernode(i, node_config(data.owners[i], owner, keys[owner], OWNER_SIDES[i]))
        run_config = server_run_config(data, out, registry, args.preset, args.run_config)
        logger.info("flwr run --run-config %s", shlex.quote(run_config))
        result = dep.run_app(run_config, timeout=args.timeout)
        print(result.stdout[-20000:])
        print(result.stderr[-5000:], file=sys.stderr)
    if result.returncode != 0 or not (out / "RESULT.txt").exists():
        print(f"byod: the federated run failed (logs under {dep.logs})", file=sys.stderr)
        return 1
    command = edge_evaluate(out, data.test, args.ways, args.shots, args.queries, args.episodes)
    print("$ " + shlex.join(["python", *command[1:]]))
    edge = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    print(edge.stdout + edge.stderr, end="")
    return edge.returncode


if __name__ == "__main__":
    raise SystemExit(main())
