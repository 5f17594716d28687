"""Parameters and multiply-accumulates of every registered classifier and the meta-generator.

Usage: ``python -m scripts.bench.model_costs [--out scripts/results]`` writes
``model_costs.json`` and ``model_costs.md`` (the model table of ``scripts/README.md``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from free_common.models import (
    GeneratorSpec,
    ModelSpec,
    build_generator,
    build_model,
    count_macs,
    count_parameters,
)

CLASSIFIERS = [
    ModelSpec("conv4", width=32),
    ModelSpec("resnet10", width=16),
    ModelSpec("resnet18", width=16),
    ModelSpec("resnet18", width=64),
]
GENERATORS = [GeneratorSpec(width=16), GeneratorSpec(width=32), GeneratorSpec(width=64)]


def generator_macs(spec: GeneratorSpec) -> int:
    """Multiply-accumulates to generate one image."""
    gen = build_generator(spec).eval()
    macs = 0

    def hook(mod: torch.nn.Module, _: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(mod, torch.nn.Conv2d):
            macs += out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            macs += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(hook) for m in gen.modules()]
    with torch.no_grad():
        gen(torch.zeros(1, spec.latent_dim))
    for h in hooks:
        h.remove()
    return macs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("scripts/results"))
    args = parser.parse_args(argv)
    rows = []
    for spec in CLASSIFIERS:
        model = build_model(spec)
        rows.append(
            {
                "model": f"{spec.arch} (width {spec.width})",
                "input": f"{spec.in_channels}x{spec.image_size}x{spec.image_size}",
                "params": count_parameters(model),
                "mmacs": round(count_macs(model) / 1e6, 2),
            }
        )
    for gspec in GENERATORS:
        rows.append(
            {
                "model": f"meta-generator (nf {gspec.width})",
                "input": f"z in R^{gspec.latent_dim} -> 1x32x32",
                "params": count_parameters(build_generator(gspec)),
                "mmacs": round(generator_macs(gspec) / 1e6, 2),
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_costs.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| model | input | parameters | MMACs per image |", "|---|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['input']} | {r['params']:,} | {r['mmacs']} |" for r in rows]
    (args.out / "model_costs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
