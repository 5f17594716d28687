"""Screening of a growing pool: every teacher measured once, the pool judged as a whole.

:class:`PoolScreen` keeps one verdict per teacher id. When ids arrive, each new teacher is
screened alone (``free_common.free.screening``); then the pool checks
(``free_common.free.trust.checks.pool_findings``: weight scale, near-duplicates, label
agreement) run again over every teacher that passed alone, in acceptance order, so a
verdict can change as peers arrive (a copy is caught when its original is present, a
false name when a peer holds the name). Verdicts and fingerprints are plain data, so the
FREE trainer checkpoints them and a resumed run never measures a teacher twice.

A screen may also share a memo of teachers screened alone (:class:`PoolScreen`'s ``memo``),
keyed by what the measurement depends on: the teacher's id, spec, class keys and every
weight's bytes, the screening settings and the probe images. A benchmark that screens the
same teacher in many pools (``scripts/bench/poison.py``) then measures it once; on one
host the measurement is deterministic for that key, so the verdict is the one a new
measurement would give, and its ``seconds`` are those of the measurement. A memo carried
to another host holds that host's measurements.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from torch import Tensor

from free_common.config import ScreeningConfig
from free_common.free.errors import NonFiniteLossError
from free_common.free.screening import ScreeningResult, screen_teacher
from free_common.free.teachers import Teacher
from free_common.free.trust.checks import Finding, UnitMatch, pool_findings
from free_common.free.trust.fingerprint import Fingerprint
from free_common.free.trust.representations import UnitFeatures, unit_features, unit_match
from free_common.submission import canonical_digest

__all__ = ["LOAD_ERRORS", "PoolScreen", "ScreenedAlone", "Verdict"]

logger = logging.getLogger(__name__)

LOAD_ERRORS = (ValueError, KeyError, RuntimeError, OSError, SafetensorError)
"""What loading a damaged or hostile teacher may raise; each excludes it with the message."""

Verdict = dict[str, Any]
"""A teacher's verdict: ``accepted``, ``reason`` (the first excluding finding),
``suspected`` (kept, with findings that did not exclude it), ``accuracy`` and
``confidence`` of its recovery, ``findings`` (every failed check: ``check``, ``exclude``,
``value``, ``limit``, ``reason``, ``other``) and ``seconds`` (its screening time)."""

ScreenedAlone = dict[str, Any]
"""A memo entry: ``verdict`` (before the pool checks), ``fingerprint``
(:meth:`Fingerprint.to_state`, or None) and ``alone`` (the findings of the teacher alone)."""


class PoolScreen:
    """Screens the teachers of a pool as they arrive and keeps their verdicts.

    Args:
        config: the screening settings (``enabled=False``: every teacher that loads is
            accepted, nothing is measured).
        probes: the probe images (N, C, H, W) in [0, 1].
        max_classes: the meta-learner's head size.
        probe_domains: (N,) domain index of each probe when the meta-val set joins several
            domains, else None.
        memo: teachers already screened alone, shared between screens (module docstring);
            None: every new id is measured.
    """

    def __init__(
        self,
        config: ScreeningConfig,
        probes: Tensor,
        *,
        max_classes: int,
        probe_domains: Tensor | None = None,
        memo: MutableMapping[str, ScreenedAlone] | None = None,
    ) -> None:
        self.config = config
        self.probes = probes
        self.probe_domains = probe_domains
        self.max_classes = max_classes
        self.memo = memo
        self._settings_digest = _settings_digest(config, probes, probe_domains, max_classes)
        self.verdicts: dict[str, Verdict] = {}
        self.fingerprints: dict[str, Fingerprint] = {}
        self._alone: dict[str, list[Finding]] = {}

    def screen(self, ids: Sequence[str], load: Callable[[str], Teacher]) -> list[str]:
        """Screen the ids not seen yet, then judge the pool again; return the new ids."""
        new = [t for t in ids if t not in self.verdicts]
        for teacher_id in new:
            self.verdicts[teacher_id] = self._screen_one(teacher_id, load)
        if new and self.config.enabled:
            self._judge_pool(ids, load)
        for teacher_id in new:
            verdict = self.verdicts[teacher_id]
            if not verdict["accepted"]:
                logger.warning("teacher %s excluded: %s", teacher_id, verdict["reason"])
        return new

    def accepted(self, ids: Sequence[str]) -> list[str]:
        """The ids of ``ids`` whose verdict is accepted, in order."""
        return [t for t in ids if self.verdicts[t]["accepted"]]

    def state_dict(self) -> dict[str, Any]:
        """Verdicts and fingerprints (plain values and tensors) for a checkpoint."""
        return {
            "verdicts": self.verdicts,
            "fingerprints": {k: fp.to_state() for k, fp in self.fingerprints.items()},
            "alone": {k: [asdict(f) for f in v] for k, v in self._alone.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.verdicts = dict(state.get("verdicts", {}))
        self.fingerprints = {
            k: Fingerprint.from_state(v) for k, v in state.get("fingerprints", {}).items()
        }
        self._alone = {k: [Finding(**f) for f in v] for k, v in state.get("alone", {}).items()}

    # ------------------------------------------------------------------ internals

    def _screen_one(self, teacher_id: str, load: Callable[[str], Teacher]) -> Verdict:
        nan = float("nan")
        started = time.perf_counter()
        try:
            teacher = load(teacher_id)
        except LOAD_ERRORS as err:
            return _verdict(ScreeningResult(teacher_id, False, nan, nan, f"cannot load: {err}"))
        if not self.config.enabled:
            return _verdict(ScreeningResult(teacher_id, True, nan, nan, ""))
        key = None if self.memo is None else self._memo_key(teacher)
        if self.memo is not None and key is not None and key in self.memo:
            return self._recalled(teacher_id, self.memo[key])
        try:
            result = screen_teacher(
                teacher,
                self.config,
                self.probes,
                max_classes=self.max_classes,
                probe_domains=self.probe_domains,
            )
        except NonFiniteLossError as err:
            result = ScreeningResult(teacher_id, False, nan, nan, f"non-finite screening: {err}")
        if result.fingerprint is not None:
            self.fingerprints[teacher_id] = result.fingerprint
        self._alone[teacher_id] = list(result.findings)
        verdict = _verdict(result)
        verdict["seconds"] = time.perf_counter() - started
        if self.memo is not None and key is not None:
            self.memo[key] = {
                "verdict": dict(verdict),
                "fingerprint": None
                if result.fingerprint is None
                else result.fingerprint.to_state(),
                "alone": [asdict(f) for f in result.findings],
            }
        return verdict

    def _memo_key(self, teacher: Teacher) -> str:
        """What a teacher's screening alone depends on, hashed (module docstring)."""
        identity = [self._settings_digest, teacher.teacher_id, teacher.spec.to_json()]
        weights = {k: _array(v) for k, v in teacher.model.state_dict().items()}
        return canonical_digest(json.dumps([*identity, teacher.class_keys]).encode(), weights).hex()

    def _recalled(self, teacher_id: str, entry: ScreenedAlone) -> Verdict:
        """The verdict alone of a memo entry; its fingerprint and findings kept as measured."""
        if entry["fingerprint"] is not None:
            self.fingerprints[teacher_id] = Fingerprint.from_state(entry["fingerprint"])
        self._alone[teacher_id] = [Finding(**f) for f in entry["alone"]]
        return dict(entry["verdict"])

    def _judge_pool(self, ids: Sequence[str], load: Callable[[str], Teacher]) -> None:
        """Pool checks over the teachers that passed alone; update every verdict."""
        alone_ok = [
            t
            for t in ids
            if t in self.fingerprints and not any(f.exclude for f in self._alone.get(t, []))
        ]
        found = pool_findings(
            [self.fingerprints[t] for t in alone_ok], self.config, self._unit_match(load)
        )
        for teacher_id in alone_ok:
            findings = self._alone.get(teacher_id, []) + found.get(teacher_id, [])
            verdict = self.verdicts[teacher_id]
            before = verdict["accepted"]
            _apply(verdict, findings)
            if before and not verdict["accepted"]:
                logger.warning("teacher %s excluded: %s", teacher_id, verdict["reason"])
            elif not before and verdict["accepted"]:
                logger.info("teacher %s accepted again (%s)", teacher_id, "pool checks")

    def _unit_match(self, load: Callable[[str], Teacher]) -> UnitMatch:
        """Hidden units of two teachers matched, each teacher's measured at most once.

        A teacher that no longer loads (a damaged pool file) is not measured: the pair's
        match is None and the teacher stays suspected, with the load error logged.
        """
        features: dict[str, UnitFeatures | None] = {}

        def of(teacher_id: str) -> UnitFeatures | None:
            if teacher_id not in features:
                try:
                    features[teacher_id] = unit_features(load(teacher_id), self.probes)
                except LOAD_ERRORS as err:
                    logger.warning("hidden units of %s not measured: %s", teacher_id, err)
                    features[teacher_id] = None
            return features[teacher_id]

        def match(a: str, b: str) -> float | None:
            ours, theirs = of(a), of(b)
            return None if ours is None or theirs is None else unit_match(ours, theirs)

        return match


def _settings_digest(
    config: ScreeningConfig, probes: Tensor, probe_domains: Tensor | None, max_classes: int
) -> str:
    """Hash of everything besides the teacher that its screening alone depends on."""
    settings = json.dumps([asdict(config), max_classes], sort_keys=True).encode()
    tensors = {"probes": _array(probes)}
    if probe_domains is not None:
        tensors["probe_domains"] = _array(probe_domains)
    return canonical_digest(settings, tensors).hex()


def _array(tensor: Tensor) -> npt.NDArray[np.generic]:
    """A CPU numpy view of ``tensor``, for :func:`canonical_digest`."""
    return tensor.detach().to("cpu").numpy()


def _verdict(result: ScreeningResult) -> Verdict:
    verdict: Verdict = {
        "teacher_id": result.teacher_id,
        "accepted": result.accepted,
        "reason": result.reason,
        "suspected": False,
        "accuracy": result.accuracy,
        "confidence": result.confidence,
        "findings": [],
        "seconds": 0.0,
    }
    if result.findings:
        _apply(verdict, list(result.findings))
    return verdict


def _apply(verdict: Verdict, findings: list[Finding]) -> None:
    """Set ``accepted``, ``reason``, ``suspected`` and ``findings`` from ``findings``."""
    excluding = [f for f in findings if f.exclude]
    verdict["findings"] = [asdict(f) for f in findings]
    verdict["accepted"] = not excluding
    verdict["reason"] = excluding[0].reason if excluding else ""
    verdict["suspected"] = bool(findings) and not excluding
