"""Verdicts drawn from fingerprints: each teacher alone, then against the rest of the pool.

Checks of one teacher (:func:`teacher_findings`):

- ``logit_range``: its logits on the probes exceed ``max_logit`` (scaled weights, e.g.
  model replacement, or broken normalisation);
- ``recovery``: its classes cannot be recovered confidently (random, shuffled or
  corrupted weights; a model that answers one class). With probes of several domains,
  the recovery from the domain where the teacher does best is judged: an honest model of
  one domain is pushed to its classes less easily from another domain's images;
- ``constant_output``: it gives one class to nearly every probe, confidently (mean
  probability of its favourite class over the probes). When the probes come from several
  domains (a ``glyphs+icons`` meta-val), it must do so on the probes of every domain: a
  model of one domain may well read every image of another as one of its classes;
- ``trigger``: one of its classes is reached from most probe images through a small,
  compact patch (:mod:`free_common.free.trust.triggers`: a mask that flips
  ``min_trigger_flip`` of the held-out probes, whose share of the pixels over the share
  of its mass in one window is below ``min_trigger_patch``), the shortcut a backdoor
  implants (patch triggers as in BadNets; Neural Cleanse's search, judged on probes the
  mask was not fitted on, the classes that look like shortcuts fitted further on their own).

Checks against the pool (:func:`pool_findings`, on the teachers that passed the above, in
acceptance order):

- ``weight_scale``: its weight norm is more than ``max_weight_ratio`` times the median
  of its spec (either way), once ``min_peers`` other teachers share the spec;
- ``near_duplicate``: it copies a teacher accepted earlier. Its weights close to the
  other's (the cosine of their weight sketches, same spec only, reaches
  ``max_weight_similarity``: a copy plus noise) exclude it. Outputs on the probes that
  match the other's output by output (correlation of matched outputs reaches
  ``max_duplicate_correlation``) with unrelated weights are what a copy whose hidden
  units were reordered looks like, but also two honest owners of the same classes (two
  icon owners correlated at 0.910, while noised copies range down to 0.74). The hidden
  units then decide, where the caller can measure them (same spec): units that match the
  other's one for one (mean matched unit correlation reaches ``max_unit_correlation``,
  :mod:`free_common.free.trust.representations`) exclude it as a reordered copy; else,
  or unmeasured, it is suspected only;
- ``label_agreement``: on the class names it shares with others, its output for a name
  does not respond to the probes like the peers' outputs for that name. For each (name,
  peer) pair: the correlation, over the probes, of its output for the name with the
  peer's output for it, and the margin of that correlation over the best one of its other
  outputs. It fails when the mean correlation is below ``min_label_correlation`` (its
  output for the name reads something else: trained on other classes) or the mean margin
  below ``min_label_margin`` (another of its outputs reads the name: permuted labels).
  Peers that fail are dropped and everyone scored again, so a poisoned peer does not drag
  an honest teacher down. With fewer than ``min_label_pairs`` pairs a failure only makes
  the teacher suspected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from free_common.config import ScreeningConfig
from free_common.free.trust.fingerprint import Fingerprint, recovery_passes

__all__ = [
    "CHECKS",
    "Finding",
    "UnitMatch",
    "LabelAgreement",
    "label_agreements",
    "matched_correlation",
    "pool_findings",
    "standardised",
    "least_top_class_share",
    "teacher_findings",
    "top_class_share",
]

CHECKS: tuple[str, ...] = (
    "logit_range",
    "recovery",
    "constant_output",
    "trigger",
    "weight_scale",
    "near_duplicate",
    "label_agreement",
)
_EPS = 1e-6
_TRIM_ROUNDS = 5

UnitMatch = Callable[[str, str], float | None]
"""``(teacher_id, other_id) -> mean matched unit correlation`` of two teachers of one spec
(:func:`free_common.free.trust.representations.unit_match` on their unit features), or
None when either cannot be measured (the teacher then stays suspected)."""


@dataclass(frozen=True)
class Finding:
    """One check that a teacher failed.

    Attributes:
        check: one of :data:`CHECKS`.
        exclude: True when the teacher is excluded for it; False: suspected only.
        value: the measured figure.
        limit: the threshold it crossed.
        reason: a sentence with the figure, for logs and the report.
        other: the teacher it was compared with, if any.
    """

    check: str
    exclude: bool
    value: float
    limit: float
    reason: str
    other: str = ""


def teacher_findings(
    fp: Fingerprint, config: ScreeningConfig, probe_domains: torch.Tensor | None = None
) -> list[Finding]:
    """The checks of one teacher alone, cheapest first."""
    top = fp.max_abs_logit
    if top > config.max_logit:
        return [
            Finding(
                "logit_range",
                True,
                top,
                config.max_logit,
                f"logits reach {top:.3g} on probe images (limit {config.max_logit:g})",
            )
        ]
    found = []
    rec = fp.recovery
    if rec is not None and not recovery_passes(rec, config):
        found.append(
            Finding(
                "recovery",
                True,
                rec.accuracy,
                config.min_accuracy,
                f"recovery accuracy {rec.accuracy:.3f} (limit {config.min_accuracy}), "
                f"confidence {rec.confidence:.3f} (limit {config.min_confidence})",
            )
        )
    share, label = least_top_class_share(fp.logits, probe_domains)
    if share > config.max_top_class_share:
        found.append(
            Finding(
                "constant_output",
                True,
                share,
                config.max_top_class_share,
                f"answers class {label} with mean probability {share:.3f} over the probe "
                f"images{'' if probe_domains is None else ' of each domain (the least)'} "
                f"(limit {config.max_top_class_share})",
            )
        )
    trigger = _trigger_finding(fp, config)
    if trigger is not None:
        found.append(trigger)
    return found


def _trigger_finding(fp: Fingerprint, config: ScreeningConfig) -> Finding | None:
    """The ``trigger`` check: a class reached through a patch below ``min_trigger_patch``."""
    scan = fp.trigger
    k = None if scan is None else scan.shortcut(config.min_trigger_flip)
    if scan is None or k is None or scan.patch(k) >= config.min_trigger_patch:
        return None
    return Finding(
        "trigger",
        True,
        scan.patch(k),
        config.min_trigger_patch,
        f"class {k} is reached from {scan.flip_rates[k]:.0%} of held-out probe images "
        f"through a mask of {scan.mask_shares[k]:.2%} of the pixels, "
        f"{scan.concentrations[k]:.0%} of it in one patch "
        f"(size {scan.patch(k):.2%}, limit {config.min_trigger_patch:.2%}"
        f"{'' if scan.scans == 1 else f'; the least of {scan.scans} scans'}): a backdoor trigger",
    )


def least_top_class_share(logits: torch.Tensor, domains: torch.Tensor | None) -> tuple[float, int]:
    """:func:`top_class_share` of the domain whose probes get the least constant answers.

    ``logits``: (probes, classes); ``domains``: (probes,) domain index of each probe, or
    None for one domain.
    """
    if domains is None:
        return top_class_share(logits)
    return min(top_class_share(logits[domains == d]) for d in torch.unique(domains).tolist())


def top_class_share(logits: torch.Tensor) -> tuple[float, int]:
    """The largest mean probability of one class over the probes, and that class.

    ``logits``: (probes, classes). 1/classes for a teacher that spreads its answers
    evenly; 1 for one that answers a single class for everything, with certainty.
    """
    if logits.numel() == 0:
        return 0.0, 0
    mean = logits.double().softmax(dim=1).mean(dim=0)
    label = int(mean.argmax())
    return float(mean[label]), label


def standardised(logits: torch.Tensor) -> npt.NDArray[np.float64]:
    """(probes, classes) logits with columns centred and scaled to unit variance.

    A constant column (an output that never moves) becomes 0.
    """
    x = logits.double().numpy()
    x = x - x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True)
    return np.where(std > _EPS, x / np.maximum(std, _EPS), 0.0)


def matched_correlation(corr: npt.NDArray[np.float64]) -> float:
    """Mean correlation of outputs matched one to one, greedily by largest correlation.

    ``corr`` is (C, C') with C <= C'; greedy matching never exceeds the optimal one, so
    a pair of unrelated teachers is never made to look closer than it is.
    """
    left = corr.astype(np.float64).copy()
    total = 0.0
    for _ in range(min(left.shape)):
        i, j = np.unravel_index(int(np.argmax(left)), left.shape)
        total += float(left[i, j])
        left[i, :], left[:, j] = -np.inf, -np.inf
    return total / float(min(corr.shape))


def pool_findings(
    fps: Sequence[Fingerprint], config: ScreeningConfig, units: UnitMatch | None = None
) -> dict[str, list[Finding]]:
    """Pool checks over teachers that passed :func:`teacher_findings`, in acceptance order.

    Args:
        fps: the fingerprints, in acceptance order.
        config: the limits.
        units: measures two same-spec teachers' hidden units against each other, asked
            only for an output match with unrelated weights (None: such a match stays a
            suspicion).

    Returns:
        teacher id -> its findings (ids without findings are absent).
    """
    found: dict[str, list[Finding]] = {}
    for fp, finding in _weight_scale(fps, config):
        found.setdefault(fp.teacher_id, []).append(finding)
    z = [standardised(fp.logits) for fp in fps]
    duplicates = _near_duplicates(fps, z, config, units)
    for index, finding in duplicates.items():
        found.setdefault(fps[index].teacher_id, []).append(finding)
    candidates = [
        i for i, fp in enumerate(fps) if not any(f.exclude for f in found.get(fp.teacher_id, []))
    ]
    for index, finding in _label_agreement(fps, z, candidates, config):
        found.setdefault(fps[index].teacher_id, []).append(finding)
    return found


def _weight_scale(
    fps: Sequence[Fingerprint], config: ScreeningConfig
) -> list[tuple[Fingerprint, Finding]]:
    by_spec: dict[str, list[Fingerprint]] = {}
    for fp in fps:
        by_spec.setdefault(fp.spec, []).append(fp)
    out = []
    for group in by_spec.values():
        if len(group) < config.min_peers + 1:
            continue
        median = float(np.median([fp.weight_norm for fp in group]))
        for fp in group:
            ratio = fp.weight_norm / max(median, _EPS)
            if max(ratio, 1 / max(ratio, _EPS)) > config.max_weight_ratio:
                out.append(
                    (
                        fp,
                        Finding(
                            "weight_scale",
                            True,
                            ratio,
                            config.max_weight_ratio,
                            f"weight norm {fp.weight_norm:.3g} is {ratio:.2f}x the median "
                            f"{median:.3g} of {len(group)} teachers of its spec "
                            f"(limit {config.max_weight_ratio:g}x either way)",
                        ),
                    )
                )
    return out


def _near_duplicates(
    fps: Sequence[Fingerprint],
    z: list[npt.NDArray[np.float64]],
    config: ScreeningConfig,
    units: UnitMatch | None,
) -> dict[int, Finding]:
    """Each teacher against those before it that are not excluded as copies themselves.

    A weight match with any of them excludes; otherwise the closest output match, if it
    reaches the limit, is judged on hidden units (same spec, ``units`` given): a unit
    match excludes, anything else leaves the teacher suspected.
    """
    out: dict[int, Finding] = {}
    probes = fps[0].logits.shape[0] if fps else 0
    for j in range(len(fps)):
        closest: tuple[float, float, int] | None = None  # (outputs, weights, i)
        for i in range(j):
            if (i in out and out[i].exclude) or z[i].shape[1] != z[j].shape[1]:
                continue
            same_spec = fps[i].spec == fps[j].spec
            weights = float(fps[i].sketch @ fps[j].sketch) if same_spec else 0.0
            outputs = matched_correlation(z[j].T @ z[i] / probes)
            if weights >= config.max_weight_similarity:
                out[j] = _duplicate(fps[i].teacher_id, weights, outputs, probes, config, True)
                break
            if outputs >= config.max_duplicate_correlation and (
                closest is None or outputs > closest[0]
            ):
                closest = (outputs, weights, i)
        if j not in out and closest is not None:
            outputs, weights, i = closest
            other = fps[i].teacher_id
            unit = None
            if units is not None and fps[i].spec == fps[j].spec:
                unit = units(fps[j].teacher_id, other)
            if unit is not None:
                out[j] = _reordered_copy(other, weights, outputs, unit, probes, config)
            else:
                out[j] = _duplicate(other, weights, outputs, probes, config, False)
    return out


def _duplicate(
    other: str, weights: float, outputs: float, probes: int, config: ScreeningConfig, exclude: bool
) -> Finding:
    """The finding of a weight match (excluded) or an unjudged output match (suspected)."""
    why = (
        ""
        if exclude
        else "; weights unrelated: suspected (a copy with reordered hidden units, or an owner "
        "of the same classes)"
    )
    return Finding(
        "near_duplicate",
        exclude,
        weights if exclude else outputs,
        config.max_weight_similarity if exclude else config.max_duplicate_correlation,
        f"near-duplicate of {other}: {_figures(weights, outputs, probes, config)}{why}",
        other,
    )


def _reordered_copy(
    other: str, weights: float, outputs: float, unit: float, probes: int, config: ScreeningConfig
) -> Finding:
    """An output match with unrelated weights, judged on the hidden units."""
    copy = unit >= config.max_unit_correlation
    verdict = (
        "its hidden units are the other's reordered: excluded"
        if copy
        else "hidden units its own: suspected (an owner of the same classes?)"
    )
    return Finding(
        "near_duplicate",
        copy,
        unit,
        config.max_unit_correlation,
        f"near-duplicate of {other}: {_figures(weights, outputs, probes, config)}, matched "
        f"unit correlation {unit:.3f} (limit {config.max_unit_correlation}); {verdict}",
        other,
    )


def _figures(weights: float, outputs: float, probes: int, config: ScreeningConfig) -> str:
    return (
        f"weight similarity {weights:.3f} (limit {config.max_weight_similarity}), matched "
        f"output correlation {outputs:.3f} on {probes} probe images (limit "
        f"{config.max_duplicate_correlation})"
    )


@dataclass(frozen=True)
class LabelAgreement:
    """How one teacher's outputs for shared class names compare with its peers' outputs.

    Attributes:
        correlation: mean, over (name, peer) pairs, of the probe correlation of its output
            for the name with the peer's output for it.
        margin: mean of that correlation minus the best correlation of any of its other
            outputs with the peer's output.
        pairs: (name, peer) pairs.
        worst: the three pairs of lowest margin, as text.
    """

    correlation: float
    margin: float
    pairs: int
    worst: tuple[str, ...] = ()

    def fails(self, config: ScreeningConfig) -> bool:
        """Whether either mean is below its limit (regardless of the number of pairs)."""
        return self.pairs > 0 and (
            self.correlation < config.min_label_correlation or self.margin < config.min_label_margin
        )


def _label_agreement(
    fps: Sequence[Fingerprint],
    z: list[npt.NDArray[np.float64]],
    candidates: list[int],
    config: ScreeningConfig,
) -> list[tuple[int, Finding]]:
    """Label agreement of ``candidates``; peers that fail are dropped and all re-scored."""
    trusted = set(candidates)
    scores: dict[int, LabelAgreement] = {}
    for _ in range(_TRIM_ROUNDS):
        scores = {i: _label_score(i, fps, z, trusted) for i in candidates}
        failing = {
            i for i, a in scores.items() if a.fails(config) and a.pairs >= config.min_label_pairs
        }
        if trusted == set(candidates) - failing:
            break
        trusted = set(candidates) - failing
    out = []
    for index, a in scores.items():
        if not a.fails(config):
            continue
        exclude = a.pairs >= config.min_label_pairs
        note = "" if exclude else f"; fewer than {config.min_label_pairs} pairs: suspected"
        out.append(
            (
                index,
                Finding(
                    "label_agreement",
                    exclude,
                    a.margin,
                    config.min_label_margin,
                    f"outputs disagree with peers on shared class names over {a.pairs} "
                    f"(name, peer) pairs: mean correlation {a.correlation:.3f} (limit "
                    f"{config.min_label_correlation:g}), mean margin {a.margin:.3f} (limit "
                    f"{config.min_label_margin:g}); worst: {', '.join(a.worst)}{note}",
                ),
            )
        )
    return out


def _label_score(
    index: int,
    fps: Sequence[Fingerprint],
    z: list[npt.NDArray[np.float64]],
    trusted: set[int],
) -> LabelAgreement:
    """One teacher's label agreement against the ``trusted`` others."""
    holders: dict[str, list[int]] = {}
    for other in sorted(trusted - {index}):
        for key in set(fps[other].class_keys):
            holders.setdefault(key, []).append(other)
    probes = z[index].shape[0]
    pairs: list[tuple[float, float, str]] = []
    for output, key in enumerate(fps[index].class_keys):
        for other in holders.get(key, []):
            theirs = fps[other].class_keys.index(key)
            column = z[index].T @ z[other][:, theirs] / probes  # (my outputs,)
            rest = np.delete(column, output)
            margin = float(column[output] - rest.max()) if rest.size else 0.0
            text = f"{key} with {fps[other].teacher_id} ({margin:.2f})"
            pairs.append((margin, float(column[output]), text))
    if not pairs:
        return LabelAgreement(0.0, 0.0, 0)
    worst = tuple(text for _, _, text in sorted(pairs)[:3])
    return LabelAgreement(
        float(np.mean([c for _, c, _ in pairs])),
        float(np.mean([m for m, _, _ in pairs])),
        len(pairs),
        worst,
    )


def label_agreements(fps: Sequence[Fingerprint]) -> dict[str, LabelAgreement]:
    """Each teacher's label agreement against all the others (no peer dropped)."""
    z = [standardised(fp.logits) for fp in fps]
    everyone = set(range(len(fps)))
    return {fp.teacher_id: _label_score(i, fps, z, everyone) for i, fp in enumerate(fps)}
