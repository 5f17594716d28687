"""The FREE training loop (Wei et al., CVPR 2024, Alg. 1) with checkpoints; no Flower import.

One outer iteration (``free_common/free/README.md`` describes each step):

1. screen teachers that are new in the source and judge the pool again (``server.trust``);
2. sample ``teachers_per_iteration`` accepted teachers uniformly with replacement and load
   only those (small LRU cache);
3. FIVE: adapt a clone of the meta-generator to each for k steps, FOMAML outer step
   (``free_common.free.inversion``, Eq. 1-2);
4. after warm-up: every teacher's images go to the memory bank; the meta-learner takes
   one KD + implicit-gradient-alignment step (``free_common.free.meta_learner``, Eq. 3);
   then cross-task MAML replay from the bank under the patience rule
   (``free_common.free.replay``);
5. every ``eval.every`` iterations and at the end: meta-val evaluation; the best
   meta-val model is kept (selection never looks at meta-test);
6. every ``checkpoint_every`` iterations and at the end: an atomic checkpoint with
   everything (models, optimisers, memory bank, RNG states, history, best-so-far,
   screening verdicts), from which a killed run resumes bit-exactly.

After the last iteration, with ``pool_kd.enabled``: the pool distillation stage
(``free_common.free.pool_distillation``) starts from the selected model, distils the
features of the ``pool_kd.teachers`` pool models that rank best on meta-val into it, on
the memory bank, and is validated and checkpointed every ``pool_kd.eval_every`` steps;
model selection keeps the best of everything it has seen. The stage runs once: training
continued past it starts from the distilled learner and does not repeat it.

All randomness of the loop comes from one ``torch.Generator`` owned by the trainer (and
saved in the checkpoint), so code outside the loop that consumes the global RNG cannot
change the course of a run; the global RNG states are checkpointed as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from free_common.config import FreeConfig
from free_common.data.base import ClassImages
from free_common.evaluation import evaluate
from free_common.free.best_teacher import (
    Ranking,
    rank_by_nearest_centroid,
    rank_per_domain,
    take_in_turns,
)
from free_common.free.cross_distillation import TeacherHeads, cross_distill_step
from free_common.free.errors import NonFiniteLossError
from free_common.free.inversion import MetaGeneratorInverter, Recovered
from free_common.free.memory_bank import MemoryBank
from free_common.free.meta_learner import (
    build_meta_learner,
    distill_batches,
    learner_spec,
    meta_learner_step,
)
from free_common.free.pool_distillation import PoolDistiller, precision_dtype
from free_common.free.replay import ReplayStats, replay_phase
from free_common.free.teachers import Teacher, TeacherCache, TeacherSource
from free_common.free.trust.probes import probe_domains, probe_images
from free_common.maml import MamlTrainer
from free_common.models import Classifier, ModelSpec
from free_common.runtime import get_rng_state, pick_device, seed_everything, set_rng_state
from server.checkpoint import load_checkpoint, save_checkpoint
from server.trust import PoolScreen, Verdict

__all__ = ["FreeResult", "FreeTrainer", "FreeTrainingError", "NonFiniteLossError"]

logger = logging.getLogger(__name__)

_PROBE_SEED = 0  # every run draws the same probe images from meta-val


class FreeTrainingError(RuntimeError):
    """The run cannot proceed (e.g. no teacher passed screening)."""


@dataclass
class FreeResult:
    """What :meth:`FreeTrainer.train` returns.

    Attributes:
        model: the best meta-learner (selected on meta-val), ``batch_stats=True``, on CPU.
        spec: its model spec (head = ``meta_learner.n_way`` outputs).
        best_iteration: iteration of the selected model.
        best_pool_kd_step: its pool distillation step (0: the model of a meta-training
            iteration, or of the best-teacher start).
        best_val: its mean meta-val accuracy over ``eval.shots``, in [0, 1].
        val: meta-val results at the best iteration, ``{k_shot: {"mean", "ci95"}}``.
        test: meta-test results of the selected model per shot (empty without test data).
        history: one dict per iteration (``"kind": "iteration"``: losses, recovery
            quality, replay length, bank size, seconds) and per evaluation (``"val"``).
        excluded: teacher id -> reason, for every teacher rejected by screening.
        screening: teacher id -> its screening verdict (``server.trust.Verdict``).
        iterations_done: iterations completed so far (across resumes).
        inversion_seconds: total wall time spent in meta-generator inversion.
        pool_kd: the pool distillation stage: distilled teachers, their meta-val scores,
            steps done, seconds (empty when the stage did not run).
    """

    model: Classifier
    spec: ModelSpec
    best_iteration: int
    best_val: float
    val: dict[int, dict[str, float]] = field(default_factory=dict)
    test: dict[int, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    screening: dict[str, Verdict] = field(default_factory=dict)
    iterations_done: int = 0
    inversion_seconds: float = 0.0
    best_pool_kd_step: int = 0
    pool_kd: dict[str, Any] = field(default_factory=dict)


@dataclass
class _RunState:
    """Everything besides modules and optimisers that a checkpoint must carry."""

    iteration: int = 0
    best_iteration: int = 0
    best_val: float = float("-inf")
    best_results: dict[int, dict[str, float]] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    screened: dict[str, dict[str, Any]] = field(default_factory=dict)
    inversion_seconds: float = 0.0
    init: dict[str, Any] | None = None
    best_step: int = 0
    pool_kd: dict[str, Any] = field(default_factory=dict)


class FreeTrainer:
    """Runs FREE on a teacher pool; resumes from ``work_dir/checkpoints/latest.pt``.

    Args:
        config: the run configuration (``FreeConfig.preset(...)``).
        teachers: the pool; ids are re-read every iteration, so teachers added between
            calls to :meth:`train` are screened and sampled when training continues.
        val_data: meta-val split (model selection).
        test_data: meta-test split (final report only), or None.
        work_dir: where checkpoints (``checkpoints/latest.pt``) go.
        device: default :func:`free_common.runtime.pick_device`.
    """

    def __init__(
        self,
        config: FreeConfig,
        teachers: TeacherSource,
        *,
        val_data: ClassImages,
        test_data: ClassImages | None,
        work_dir: Path,
        device: torch.device | str | None = None,
    ) -> None:
        self.config = config
        self.source = teachers
        self.val_data, self.test_data = val_data, test_data
        self.checkpoint_path = Path(work_dir) / "checkpoints" / "latest.pt"
        self.device = pick_device(device)
        seed_everything(config.seed)
        self.spec = learner_spec(config.meta_learner)
        self.learner = build_meta_learner(config.meta_learner).to(self.device)
        self.inverter = MetaGeneratorInverter(config.inversion, self.device)
        self.optimizer = torch.optim.Adam(
            self.learner.parameters(), lr=config.meta_learner.outer_lr
        )
        replay = config.replay
        self.maml = MamlTrainer(
            self.learner,
            inner_steps=replay.inner_steps,
            inner_lr=replay.inner_lr,
            first_order=replay.first_order,
            optimizer=self.optimizer,
        )
        self.bank = MemoryBank(config.memory)
        self.rng = torch.Generator().manual_seed(config.seed)
        self.heads = TeacherHeads(
            self.learner.num_features,
            config.cross_kd.head_lr,
            self.device,
            config.cross_kd.head_init,
        )
        self.cache = TeacherCache(teachers, _cache_size(config), self.device)
        self.screen = PoolScreen(
            config.screening,
            probe_images(val_data, config.screening.probe_images, seed=_PROBE_SEED),
            max_classes=config.meta_learner.n_way,
            probe_domains=probe_domains(val_data, config.screening.probe_images, seed=_PROBE_SEED),
        )
        self.state = _RunState()
        self.distiller: PoolDistiller | None = None
        self._saved_distiller: dict[str, Any] | None = None
        self._resume()

    # ------------------------------------------------------------------ public API

    def train(
        self,
        progress: bool = True,
        *,
        iterations: int | None = None,
        pool_kd_steps: int | None = None,
    ) -> FreeResult:
        """Run (or continue) meta-training until ``iterations`` (default config.iterations).

        Resumes from the latest checkpoint automatically; evaluates on meta-val every
        ``eval.every`` iterations and at the end, keeps the best; reports meta-test once.
        Once ``config.iterations`` are done, runs the pool distillation stage if enabled,
        up to its step ``pool_kd_steps`` (default: all of its steps; 0: not yet). The
        stage validates and checkpoints where it stops, and a later call continues it.

        Raises:
            NonFiniteLossError: a loss term became NaN/Inf (names iteration and term);
                the last checkpoint on disk is left untouched.
            FreeTrainingError: no teacher passed screening.
        """
        target = iterations if iterations is not None else self.config.iterations
        if pool_kd_steps is not None and pool_kd_steps < 0:
            raise ValueError(f"pool_kd_steps must be >= 0: {pool_kd_steps}")
        if self.config.meta_learner.init == "best_teacher" and self.state.init is None:
            self._start_from_best_teacher()
        start = self.state.iteration + 1
        bar = tqdm(
            range(start, target + 1),
            initial=start - 1,
            total=target,
            desc="FREE",
            disable=not progress,
        )
        for it in bar:
            record = self._run_iteration(it)
            if it % self.config.eval.every == 0 or it == target:
                record.update(self._validate(it))
            self.state.iteration = it
            if it % self.config.checkpoint_every == 0 or it == target:
                self._save()
            bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if _is_number(v)})
        if self.state.best_state is None:
            self._validate(self.state.iteration)
        if self.config.pool_kd.enabled and self.state.iteration >= self.config.iterations:
            self._pool_distill(progress, pool_kd_steps)
        return self._result()

    @property
    def finished(self) -> bool:
        """Every iteration run, and the pool distillation stage done (or skipped, or off)."""
        if self.state.iteration < self.config.iterations:
            return False
        stage = self.state.pool_kd
        if not self.config.pool_kd.enabled or stage.get("skipped"):
            return True
        return int(stage.get("steps_done", 0)) >= self.config.pool_kd.steps

    def add_teachers(self, teachers: Iterable[Teacher]) -> None:
        """Add teachers to a source that supports it (``InMemoryTeachers``)."""
        add = getattr(self.source, "add", None)
        if add is None:
            raise TypeError(f"{type(self.source).__name__} cannot add teachers")
        add(list(teachers))

    def screen_pool(self) -> dict[str, Verdict]:
        """Screen every teacher of the source now (no training); return all verdicts."""
        self._screen_new()
        return {k: dict(v) for k, v in self.state.screened.items()}

    @property
    def excluded(self) -> dict[str, str]:
        """Teacher id -> reason for every teacher rejected by screening."""
        return {k: v["reason"] for k, v in self.state.screened.items() if not v["accepted"]}

    # ------------------------------------------------------------------ one iteration

    def _run_iteration(self, it: int) -> dict[str, Any]:
        try:
            record = self._iteration(it)
        except NonFiniteLossError as err:
            logger.error("stopping: %s (last good checkpoint kept)", err.at_iteration(it))
            raise err.at_iteration(it) from err
        self.state.history.append(record)
        logger.info(
            "iter %d: %s", it, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if _is_number(v))
        )
        return record

    def _iteration(self, it: int) -> dict[str, Any]:
        warm = it <= self.config.warmup
        teachers = self.cache.get_many(self._sample_ids())
        recovered, seconds = self._invert(teachers, warm)
        record: dict[str, Any] = {
            "kind": "iteration",
            "iteration": it,
            "warmup": warm,
            "teachers": [t.teacher_id for t in teachers],
            "inversion_seconds": seconds,
            "recovery_accuracy": _mean([r.accuracy for r in recovered]),
            "recovery_confidence": _mean([r.confidence for r in recovered]),
            "generator_loss": _mean([r.loss for r in recovered]),
        }
        if not warm:
            record.update(self._learn(recovered, teachers))
        record["bank_images"] = len(self.bank)
        record["bank_classes"] = len(self.bank.keys)
        return record

    def _invert(self, teachers: list[Teacher], warm: bool) -> tuple[list[Recovered], float]:
        _sync(self.device)
        started = time.perf_counter()
        adv = 0.0 if warm else self.config.inversion.adv_weight
        recovered = self.inverter.invert(
            teachers, self.rng, learner=None if warm else self.learner, adv_weight=adv
        )
        _sync(self.device)
        seconds = time.perf_counter() - started
        self.state.inversion_seconds += seconds
        return recovered, seconds

    def _learn(self, recovered: list[Recovered], teachers: list[Teacher]) -> dict[str, Any]:
        for task in recovered:  # defect fix: every teacher's images, not only the last
            self.bank.add(task.images, task.targets, task.class_keys)
        started = time.perf_counter()
        losses: list[float] = []
        if self.config.meta_learner.own_task_kd:
            batches = distill_batches(
                recovered, teachers, self.config.inversion, self.spec, self.rng
            )
            losses = meta_learner_step(
                self.learner, self.optimizer, batches, self.config.meta_learner
            )
        cross = self._cross_distill(teachers) if self.config.cross_kd.enabled else []
        _sync(self.device)
        distilled = time.perf_counter()
        stats = ReplayStats(0, 0.0, float("nan"))
        if self.config.replay.enabled:
            stats = replay_phase(
                self.maml,
                self.bank,
                self.config.replay,
                self.rng,
                image_size=self.spec.image_size,
                channels=self.spec.in_channels,
            )
        _sync(self.device)
        return {
            "distill_loss": _mean(losses),
            "cross_kd_loss": _mean(cross),
            "distill_seconds": distilled - started,
            "replay_meta_batches": stats.meta_batches,
            "replay_accuracy": stats.best_accuracy,
            "replay_loss": stats.last_loss,
            "replay_seconds": time.perf_counter() - distilled,
        }

    def _cross_distill(self, sampled: list[Teacher]) -> list[float]:
        """``cross_kd.steps`` updates on bank batches labelled by this iteration's teachers.

        The labelling teachers are the iteration's sampled ones (each once), then others
        drawn uniformly from the accepted teachers up to ``cross_kd.teachers``.
        """
        cfg = self.config.cross_kd
        ids = list(dict.fromkeys(t.teacher_id for t in sampled))
        extra = max(0, cfg.teachers - len(ids))
        ids = list(dict.fromkeys(ids + self._draw_accepted(extra)))[: max(cfg.teachers, 1)]
        labellers = self.cache.get_many(ids)
        inversion = self.config.inversion
        return [
            cross_distill_step(
                self.learner,
                self.optimizer,
                self.heads,
                labellers,
                self.bank.sample(cfg.batch, self.rng).to(self.device),
                cfg,
                self.rng,
                crop_padding=inversion.crop_padding,
                flip=inversion.horizontal_flip,
            )
            for _ in range(cfg.steps)
        ]

    # ------------------------------------------------------------------ teachers

    def _accepted(self) -> list[str]:
        active = self.screen.accepted(self.source.ids())
        if not active:
            raise FreeTrainingError(
                f"no usable teacher: {len(self.state.screened)} screened, all excluded"
            )
        return active

    def _draw_accepted(self, n: int) -> list[str]:
        """``n`` accepted teacher ids drawn uniformly with replacement (trainer RNG)."""
        active = self._accepted()
        picks = torch.randint(len(active), (n,), generator=self.rng)
        return [active[i] for i in picks.tolist()]

    def _sample_ids(self) -> list[str]:
        self._screen_new()
        return self._draw_accepted(self.config.teachers_per_iteration)

    def _screen_new(self) -> None:
        self.screen.screen(self.source.ids(), self.cache.get)
        self.state.screened = self.screen.verdicts

    def _start_from_best_teacher(self) -> None:
        """Load the backbone of the best compatible pool model (meta-val, nearest centroid).

        Compatible: the learner's architecture, width, input and normalisation. The start
        is validated at iteration 0, so model selection can keep it. Without a compatible
        teacher the learner keeps its random initialisation.
        """
        ranking = self._rank_pool(self.spec.same_backbone, self.config.meta_learner.init_val_tasks)
        scores = ranking.scores
        if ranking.best is None:
            logger.warning("init: no pool model has the learner's backbone; starting at random")
            self.state.init = {"teacher": None, "candidates": 0}
            return
        best = ranking.best.teacher_id
        weights = ranking.best.model.state_dict()
        backbone = {k: v for k, v in self.learner.state_dict().items() if k.startswith("backbone.")}
        self.learner.load_state_dict(
            {
                **self.learner.state_dict(),
                **{k: weights[k].to(v.dtype) for k, v in backbone.items()},
            }
        )
        self.state.init = {"teacher": best, "val_proto": scores[best], "candidates": len(scores)}
        logger.info(
            "init: backbone of %s (meta-val nearest centroid %.4f, best of %d)",
            best,
            scores[best],
            len(scores),
        )
        self._validate(0)

    # ------------------------------------------------------------------ pool distillation

    def _pool_distill(self, progress: bool, until: int | None = None) -> None:
        """The pool distillation stage (module docstring), resumed where a checkpoint left it.

        ``until``: stop after this step (validated and checkpointed there); None: the last.
        """
        cfg, stage = self.config.pool_kd, self.state.pool_kd
        last = cfg.steps if until is None else min(until, cfg.steps)
        if stage.get("steps_done", 0) >= last or stage.get("skipped"):
            return
        if self.distiller is None and not self._open_distiller():
            return
        assert self.distiller is not None
        started = time.perf_counter() - float(stage.get("seconds", 0.0))
        bar = tqdm(
            range(stage["steps_done"] + 1, last + 1),
            initial=stage["steps_done"],
            total=cfg.steps,
            desc="pool distillation",
            disable=not progress,
        )
        losses: list[float] = []
        for step in bar:
            images = self.bank.sample(cfg.batch, self.rng).to(self.device)
            losses.append(self.distiller.step(images, self.rng))
            if step % cfg.eval_every and step != last:
                continue
            stage["steps_done"] = step
            stage["seconds"] = time.perf_counter() - started
            record = {"kind": "pool_kd", "step": step, "loss": _mean(losses)}
            self.state.history.append(record | {"seconds": stage["seconds"]})
            logger.info("pool distillation step %d: loss %.4f", step, record["loss"])
            losses = []
            self._validate(self.state.iteration, step=step)
            self._save()
            bar.set_postfix({"loss": f"{record['loss']:.3g}"})

    def _open_distiller(self) -> bool:
        """Rank the pool, pick the stage's teachers and build the distiller; False: skipped."""
        cfg, stage = self.config.pool_kd, self.state.pool_kd
        if not stage.get("teachers"):
            if len(self.bank) == 0:
                logger.warning("pool distillation skipped: the memory bank is empty")
                stage.update({"skipped": "empty memory bank", "steps_done": 0})
                return False
            chosen, candidates = self._choose_distilled(cfg.choose, cfg.teachers, cfg.rank_tasks)
            ordered = list(chosen)
            if not ordered:
                why = (
                    "no teacher with the learner's input"
                    if cfg.choose == "same-input"
                    else "no pool model with a feature extractor"
                )
                logger.warning("pool distillation skipped: %s", why)
                stage.update({"skipped": why, "steps_done": 0})
                return False
            assert self.state.best_state is not None
            self.learner.load_state_dict(self.state.best_state)
            stage.update(
                {
                    "teachers": ordered,
                    "scores": {i: score for i, (_, score) in chosen.items()},
                    "domains": {i: domain for i, (domain, _) in chosen.items() if domain},
                    "candidates": candidates,
                    "start": {"iteration": self.state.best_iteration, "val": self.state.best_val},
                    "steps_done": 0,
                    "seconds": 0.0,
                }
            )
            logger.info(
                "pool distillation: %d steps from the iteration-%d model, teachers %s",
                cfg.steps,
                self.state.best_iteration,
                ", ".join(
                    f"{i} ({f'{domain} ' if domain else ''}{score:.4f})"
                    for i, (domain, score) in chosen.items()
                ),
            )
        resuming = self._saved_distiller is not None
        dtype = precision_dtype(cfg.teacher_precision, self.device)
        learner = precision_dtype(cfg.learner_precision, self.device)
        stage["teacher_dtype"] = str(dtype).removeprefix("torch.")
        stage["learner_dtype"] = str(learner).removeprefix("torch.")
        logger.info(
            "pool distillation: teachers compute their targets in %s (teacher_precision %s), "
            "the learner trains in %s (learner_precision %s)",
            stage["teacher_dtype"],
            cfg.teacher_precision,
            stage["learner_dtype"],
            cfg.learner_precision,
        )
        self.distiller = PoolDistiller(
            self.learner,
            self.cache.get_many(stage["teachers"]),
            lr=cfg.lr,
            shift=cfg.shift,
            # resuming: the saved projectors replace these, and the run's RNG stays as saved
            rng=torch.Generator().manual_seed(0) if resuming else self.rng,
            device=self.device,
            teacher_dtype=dtype,
            learner_dtype=learner,
        )
        if resuming:
            assert self._saved_distiller is not None
            self.distiller.load_state_dict(self._saved_distiller)
        return True

    def _choose_distilled(
        self, choose: str, k: int, n_tasks: int
    ) -> tuple[dict[str, tuple[str, float]], int]:
        """The stage's ``k`` teachers and the number of candidates ranked.

        The teachers map id -> (the domain whose ranking chose it, "" for one ranking; its
        meta-val score there), in the order chosen. ``choose`` is
        :attr:`free_common.config.PoolDistillConfig.choose`.
        """
        if choose == "same-input":
            rankings = {"": self._rank_pool(self.spec.same_input, n_tasks)}
        else:
            self._screen_new()
            candidates = (self.cache.get(i) for i in self._accepted())
            rankings = rank_per_domain(candidates, self.val_data, **self._ranking_tasks(n_tasks))
        chosen = {i: (domain, score) for i, domain, score in take_in_turns(rankings, k)}
        return chosen, len(next(iter(rankings.values())).scores)

    def _rank_pool(self, fits: Callable[[ModelSpec], bool], n_tasks: int) -> Ranking:
        """Accepted pool models whose spec ``fits``, ranked by meta-val nearest centroid.

        Every caller scores on the same tasks (``eval.seed + 1``, the smallest shot).
        """
        self._screen_new()
        candidates = (self.cache.get(i) for i in self._accepted())
        return rank_by_nearest_centroid(
            (t for t in candidates if fits(t.spec)), self.val_data, **self._ranking_tasks(n_tasks)
        )

    def _ranking_tasks(self, n_tasks: int) -> dict[str, Any]:
        """The meta-val tasks every pool ranking scores on: ``eval.seed + 1``, the smallest shot."""
        ev = self.config.eval
        return {
            "n_way": ev.n_way,
            "k_shot": min(ev.shots),
            "q_query": ev.q_query,
            "n_tasks": n_tasks,
            "seed": ev.seed + 1,
            "device": self.device,
        }

    # ------------------------------------------------------------------ evaluation

    def _validate(self, it: int, step: int = 0) -> dict[str, Any]:
        started = time.perf_counter()
        results = self._evaluate(self.learner, self.val_data, self.config.eval.val_tasks)
        seconds = time.perf_counter() - started
        score = _mean([r["mean"] for r in results.values()])
        record = {
            "kind": "val",
            "iteration": it,
            "pool_kd_step": step,
            "val_accuracy": score,
            "results": results,
            "seconds": seconds,
        }
        self.state.history.append(record)
        if score > self.state.best_val:
            self.state.best_val, self.state.best_iteration = score, it
            self.state.best_step = step
            self.state.best_results = results
            self.state.best_state = {
                k: v.detach().cpu().clone() for k, v in self.learner.state_dict().items()
            }
        logger.info(
            "iter %d: meta-val %.4f (best %.4f @ %d)",
            it,
            score,
            self.state.best_val,
            self.state.best_iteration,
        )
        return {"val_accuracy": score, "val_seconds": seconds}

    def _evaluate(
        self, model: Classifier, data: ClassImages, n_tasks: int
    ) -> dict[int, dict[str, float]]:
        cfg = self.config.eval
        out: dict[int, dict[str, float]] = {}
        with torch.random.fork_rng(devices=[]):
            for shot in cfg.shots:
                result = evaluate(
                    model,
                    data,
                    n_way=cfg.n_way,
                    k_shot=shot,
                    q_query=cfg.q_query,
                    n_tasks=n_tasks,
                    mode="proto" if cfg.mode == "proto" else "finetune",
                    seed=cfg.seed,
                    device=self.device,
                )
                out[shot] = {"mean": result.mean, "ci95": result.ci95}
        return out

    def _best_model(self) -> Classifier:
        with torch.random.fork_rng(devices=[]):
            model = build_meta_learner(self.config.meta_learner)
        assert self.state.best_state is not None
        model.load_state_dict(self.state.best_state)
        return model.eval()

    def _result(self) -> FreeResult:
        model = self._best_model()
        test = {}
        if self.test_data is not None:
            test = self._evaluate(model, self.test_data, self.config.eval.test_tasks)
            logger.info("meta-test of the best meta-val model: %s", test)
        return FreeResult(
            model=model,
            spec=self.spec,
            best_iteration=self.state.best_iteration,
            best_val=self.state.best_val,
            val=self.state.best_results,
            test=test,
            history=list(self.state.history),
            excluded=self.excluded,
            screening={k: dict(v) for k, v in self.state.screened.items()},
            iterations_done=self.state.iteration,
            inversion_seconds=self.state.inversion_seconds,
            best_pool_kd_step=self.state.best_step,
            pool_kd=dict(self.state.pool_kd),
        )

    # ------------------------------------------------------------------ checkpoints

    def _save(self) -> None:
        state = {
            "config": self.config.to_dict(),
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "maml_steps": self.maml.steps_done,
            "inverter": self.inverter.state_dict(),
            "bank": self.bank.state_dict(),
            "heads": self.heads.state_dict(),
            "pool_kd": None if self.distiller is None else self.distiller.state_dict(),
            "screen": self.screen.state_dict(),
            "rng": {"trainer": self.rng.get_state(), "global": get_rng_state()},
            "run": asdict(self.state),
        }
        save_checkpoint(self.checkpoint_path, state)
        logger.info("checkpoint at iteration %d -> %s", self.state.iteration, self.checkpoint_path)

    def _resume(self) -> None:
        saved = load_checkpoint(self.checkpoint_path)
        if saved is None:
            return
        if _differs(saved["config"], self.config.to_dict()):
            logger.warning("resuming with a configuration that differs from the checkpoint's")
        self.learner.load_state_dict(saved["learner"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.maml.steps_done = int(saved["maml_steps"])
        self.inverter.load_state_dict(saved["inverter"])
        self.bank.load_state_dict(saved["bank"])
        if "heads" in saved:
            self.heads.load_state_dict(saved["heads"])
        self._saved_distiller = saved.get("pool_kd")
        self.rng.set_state(saved["rng"]["trainer"])
        set_rng_state(saved["rng"]["global"])
        self.state = _RunState(**saved["run"])
        self.screen.load_state_dict(saved.get("screen", {"verdicts": self.state.screened}))
        self.state.screened = self.screen.verdicts
        logger.info("resumed from %s at iteration %d", self.checkpoint_path, self.state.iteration)


def _cache_size(config: FreeConfig) -> int:
    """Teachers kept loaded: enough for one iteration's labellers when cross-KD is on."""
    if not config.cross_kd.enabled:
        return config.teacher_cache
    needed = config.cross_kd.teachers + config.teachers_per_iteration
    return max(config.teacher_cache, needed)


def _differs(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether two config dicts differ in anything but the iteration budget."""
    return {k: v for k, v in saved.items() if k != "iterations"} != {
        k: v for k, v in current.items() if k != "iterations"
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
