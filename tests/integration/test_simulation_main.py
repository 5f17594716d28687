"""The main job's path end to end: scripts/run_main.sh -> flwr run (simulation) -> report.

The small federation runs once per module (:func:`small_run`); the README's edge commands
then run, as written, on its output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from free_common.proto.v1 import export_pb2

from .federation_support import FAST, REPO, processes_mentioning, run_main, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class SmallRun:
    """A finished ``scripts/run_main.sh`` run with 4 owners and 2 rounds."""

    run_dir: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> SmallRun:
    run_dir = tmp_path_factory.mktemp("small") / "main-20250101T000000Z"
    # two rounds: the second adds new models and FREE continues from its checkpoint
    result = run_main(run_dir, owners=4, run_config=FAST + " fed.num-rounds=2", timeout=560)
    return SmallRun(run_dir, result)


def test_run_main_small_federation(small_run: SmallRun) -> None:
    run_dir, result = small_run.run_dir, small_run.result
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "FREE-Fed results (meta-test)" in log
    for owner in range(4):  # every owner's training line, in both rounds (no Ray dedup)
        trained = re.findall(rf"owner-{owner:03d}: trained \w+ in [\d.]+ s, hold-out", log)
        assert len(trained) == 2, f"owner-{owner:03d}: {len(trained)} training lines"
    for protocol in ("tuned", "prototypes (device)"):
        for method in ("FREE", "Random", "Average", "Best owner"):
            assert f"| {protocol} | {method} (" in log
    out = run_dir / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pool"]["models"] == 8
    assert summary["settings"]["min_nodes"] == 4  # run_main's own key survives the user's fed.*
    assert [len(r["accepted"]) for r in summary["rounds"]] == [4, 4]
    assert "resumed from" in log
    methods = ["FREE", "Random", "Average", "Best owner"]
    assert [(r["protocol"], r["method"]) for r in summary["rows"]] == [
        (p, m) for p in ("tuned", "proto") for m in methods
    ]
    verdict = summary["verdict"]
    assert verdict["line"] in log and verdict["line"] in (out / "RESULT.txt").read_text()
    for key in ("markdown", "json", "accuracy_plot"):
        assert Path(summary["report"][key]).stat().st_size > 0
    assert summary["pool_kd"]["steps_done"] == 10  # the stage ran once, after the last round
    assert 0 < len(summary["pool_kd"]["teachers"]) <= 5  # the best of the accepted models
    assert "## Pool distillation" in Path(summary["report"]["markdown"]).read_text()
    for head in ("proto", "protomaml"):  # signed ONNX bundles for the edge
        bundle = Path(summary["export"][head])
        assert {"model.onnx", "manifest.binpb", "manifest.sig"} <= {
            p.name for p in bundle.iterdir()
        }
        manifest = export_pb2.ExportManifest.FromString((bundle / "manifest.binpb").read_bytes())
        assert json.loads(manifest.selection_json) == verdict  # signed: why this model ships
    with sqlite3.connect(out / "pool" / "pool.db") as db:
        owners = {r[0] for r in db.execute("SELECT owner_id FROM models")}
        signed = {r[0] for r in db.execute("SELECT signed_by FROM models")}
    assert owners == {f"owner-{i:03d}" for i in range(4)}  # each owner twice, new weights
    assert "" not in signed  # every model was signature-checked (demo keys)
    assert "stopping the local SuperLink" in log
    assert not processes_mentioning(str(run_dir / "flwr-home"))


EDGE_MARKER = "<!-- edge-commands:"


def readme_edge_commands() -> str:
    """The bash block after the edge-commands marker, in whichever README page holds it."""
    for page in [REPO / "README.md", *sorted(REPO.glob("*/**/README.md"))]:
        text = page.read_text()
        if EDGE_MARKER in text:
            block = text.split(EDGE_MARKER, 1)[1].split("```bash\n", 1)[1]
            return block.split("```", 1)[0]
    raise AssertionError(f"no README page holds {EDGE_MARKER!r}")


def _checkout(root: Path, run: Path) -> Path:
    """A repository root made of links to this one, whose runs/ holds only a copy of ``run``."""
    root.mkdir(parents=True)
    for name in (
        "client",
        "free_common",
        "server",
        "scripts",
        "pyproject.toml",
        "requirements.lock",
    ):
        (root / name).symlink_to(REPO / name)
    shutil.copytree(run / "out", root / "runs" / run.name / "out", symlinks=True)
    glyphs = np.load(REPO / "free_common/data/assets/glyphs-v1.npz")["test"]
    for c in range(3):  # the README's my_support/<class>/*.png and queries/
        (root / "my_support" / f"letter-{c}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(glyphs[c, i]).save(root / "my_support" / f"letter-{c}" / f"{i}.png")
    (root / "queries").mkdir()
    for c in range(3):
        Image.fromarray(glyphs[c, 5]).save(root / "queries" / f"q{c}.png")
    return root


def _isolated(script: str) -> list[str]:
    """Run ``script`` in a private network namespace (the hub's fixed port is then free)."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode == 0:
        return ["unshare", "-n", "bash", "-c", "ip link set lo up; " + script]
    with socket.socket() as s:  # no namespaces here: a free port instead of 50061
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        "bash",
        "-c",
        script.replace(":50061", f":{port}").replace("port 50061", f"port {port}"),
    ]


def test_readme_edge_commands_run_as_written_on_the_main_jobs_output(
    small_run: SmallRun, tmp_path: Path
) -> None:
    assert small_run.result.returncode == 0, (small_run.result.stdout + small_run.result.stderr)[
        -3000:
    ]
    root = _checkout(tmp_path / "repo", small_run.run_dir)
    commands = readme_edge_commands()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # the README's ~/.cache/free-edge goes to a fresh home; the venv stays where it is
    env["FREEFED_CACHE"] = env.get("FREEFED_CACHE", str(Path.home() / ".cache" / "free-fed"))
    env["HOME"] = str(tmp_path / "home")
    script = f"set -euo pipefail\ncd {shlex.quote(str(root))}\n{commands}"
    result = subprocess.run(_isolated(script), env=env, capture_output=True, text=True, timeout=400)
    out, log = result.stdout, result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    export = root / "runs" / small_run.run_dir.name / "out" / "export"
    assert {"free-conv4-proto-v2", "free-conv4-protomaml-v2"} <= {p.name for p in export.iterdir()}
    assert re.search(r"^OK free-conv4/protomaml v1 ", out, re.M)
    verdict = json.loads((small_run.run_dir / "out" / "summary.json").read_text())["verdict"]
    assert f"selection: {verdict['line']}\n" in out  # the edge sees why this model ships
    labels = re.findall(r"queries/q(\d)\.png\tletter-(\d)\t", out)
    assert len(labels) == 6  # classify from the bundle, then from the pulled cache
    assert re.search(r"^glyphs 5-way 5-shot, 200 episodes: accuracy \d", out, re.M)
    assert re.search(r"^downloaded: free-conv4/protomaml v2 ", out, re.M)
    assert re.search(r"^free-conv4\tprotomaml\tv2\t", out, re.M)  # versions
    assert (tmp_path / "home" / ".cache" / "free-edge").is_dir()


def test_same_seed_gives_the_same_meta_learner(tmp_path: Path) -> None:
    """Replies arrive in any order; the pool and FREE do not depend on it."""
    learners = []
    for run in ("a", "b"):
        run_dir = tmp_path / run
        result = run_main(run_dir, owners=3, run_config=FAST, timeout=400)
        assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
        timing = json.loads((run_dir / "out" / "timing.json").read_text())
        assert timing["exit_code"] == 0 and timing["owners"] == 3
        # the recorded command pastes back into a shell as the same arguments
        assert shlex.split(timing["extra_args"]) == ["--run-config", FAST]
        checkpoint = torch.load(
            run_dir / "out" / "free" / "checkpoints" / "latest.pt", weights_only=True
        )
        learners.append(checkpoint["learner"])
        with sqlite3.connect(run_dir / "out" / "pool" / "pool.db") as db:
            order = [r[0] for r in db.execute("SELECT owner_id FROM models ORDER BY seq")]
        assert order == sorted(order)
    assert learners[0].keys() == learners[1].keys()
    for name, tensor in learners[0].items():
        assert torch.equal(tensor, learners[1][name]), name


def test_a_run_stopped_at_its_timeout_leaves_nothing_running(tmp_path: Path) -> None:
    """The harness's timeout stops the script through its trap, SuperLink and Ray included."""
    run_dir = tmp_path / "stopped"
    with pytest.raises(subprocess.TimeoutExpired) as stopped:
        run_main(run_dir, owners=2, run_config=FAST, timeout=20)
    assert "stopping the local SuperLink" in str(stopped.value.stdout)
    assert wait_until(lambda: not processes_mentioning(str(run_dir / "flwr-home")), 30)
