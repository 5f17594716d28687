"""The run configuration: every key of ``[tool.flwr.app.config]``, its default, and the reader.

Flower fills ``context.run_config`` from ``[tool.flwr.app.config]`` in ``pyproject.toml`` and
accepts ``--run-config`` overrides only for the keys declared there. Code that runs without
Flower (tests, benchmarks, ``run_federation``) takes the same defaults from :data:`KEYS`, the
one place they are written in Python; a unit test checks that ``pyproject.toml`` declares
exactly these keys with exactly these values.

Readers go through :class:`RunConfig`, which checks every value's type against its key's
default and fills in the defaults. ``free.*`` keys set to ``-1`` or ``""`` leave FREE's
preset value (:meth:`free_common.config.FreeConfig.preset`) in place; the other ``free.*``
keys are handed to :meth:`~free_common.config.FreeConfig.from_run_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeVar

from free_common.config import DEFAULT_PRESET, ConfigError, FreeConfig
from free_common.data.base import DatasetError
from free_common.data.sources import DataSource

__all__ = ["DEFAULTS", "KEYS", "REMOVED_KEYS", "Key", "RunConfig", "RunConfigError", "Scalar"]

Scalar = bool | int | float | str
"""The value types Flower run configs hold."""

_T = TypeVar("_T", bool, int, float, str)


REMOVED_KEYS: dict[str, str] = {
    "compare.domain-tasks": "since 2026-12-07 each domain's table is its share of the "
    "comparison's tasks, every task drawn within one domain; drop the key",
}
"""Keys an earlier release declared: what replaced each (a clearer error than unknown)."""


class RunConfigError(ValueError):
    """An unknown run-config key, or a value of the wrong type or out of range."""


@dataclass(frozen=True)
class Key:
    """One run-config key: its name, default (whose type is the key's type) and meaning."""

    name: str
    default: Scalar
    meaning: str


_PRESET_PLACEHOLDER = '-1 or "" = the preset\'s value'

KEYS: Mapping[str, Key] = MappingProxyType(
    {
        k.name: k
        for k in (
            Key(
                "preset",
                DEFAULT_PRESET,
                "FREE preset: xkd-cpu (default), xkd, paper, paper-cpu or test",
            ),
            Key(
                "seed",
                0,
                "run seed: owner assignment and local training (FREE and the Random baseline "
                "draw from free.seed, the preset's 42)",
            ),
            Key("server.threads", 0, "torch intra-op threads of the ServerApp (0 = one per core)"),
            Key("model.width", 32, "width of a simulated Conv4 owner's model"),
            Key("model.resnet-width", 16, "base width of a simulated ResNet-10/18 owner's model"),
            Key(
                "data.assets-dir",
                "",
                "absolute path of the folder holding the embedded benchmarks' .npz archives "
                '("" = the package\'s own; flwr run ships the app without them)',
            ),
            Key(
                "data.train",
                "glyphs",
                "what simulated owners partition (data source; a+b deals owners to domains)",
            ),
            Key("data.val", "glyphs", "the server's meta-val set (data source, or none)"),
            Key("data.test", "glyphs", "the server's meta-test set (data source, or none)"),
            Key(
                "data.channels",
                0,
                "meta-learner input channels, 1 or 3 (0 = those of data.test, else data.val, "
                "else data.train)",
            ),
            Key("data.image-size", 0, "meta-learner input side (0 = the FREE preset's)"),
            Key("fed.num-rounds", 1, "collection rounds"),
            Key("fed.min-nodes", 2, "connected nodes to wait for before a round"),
            Key("fed.min-replies", 2, "accepted models a round needs, else the run stops"),
            Key("fed.round-timeout-s", 900.0, "how long a round waits for replies"),
            Key("fed.node-wait-s", 300.0, "how long to wait for fed.min-nodes nodes"),
            Key("fed.arch-mix", "conv4:2,resnet10:1,resnet18:1", "simulated owners' models"),
            Key("fed.classes-per-owner", 5, "classes per simulated owner"),
            Key("fed.class-overlap", 0, "classes each simulated owner shares with the next"),
            Key("fed.key-registry", "", "JSON key registry of owners and nodes"),
            Key(
                "fed.demo-key-secret",
                "free-fed-simulation-only",
                'SIMULATION ONLY: owners\' keys derive from it; set "" in a deployment',
            ),
            Key("fed.max-model-mb", 64.0, "size limit of one submission"),
            Key(
                "fed.max-input-scale",
                4.0,
                "a model whose input side differs from the meta-learner's by more than this "
                "factor is rejected",
            ),
            Key("local.epochs", 30, "owners' local training epochs"),
            Key("local.lr", 0.01, "owners' local learning rate"),
            Key("local.batch-size", 64, "owners' local batch size"),
            Key("local.holdout", 0.2, "fraction of an owner's images held out"),
            Key("out.dir", "", 'run directory ("" = ./runs/run-<run id>)'),
            Key("export.enabled", True, "write the signed ONNX export at the end"),
            Key("export.signing-key", "", 'the server\'s Ed25519 PEM key ("" = a fresh one)'),
            Key("export.model-version", 1, "version in the export manifests"),
            Key(
                "export.ship",
                "best",
                "what the export carries: best (the best method on meta-val) or free",
            ),
            Key(
                "compare.protocols",
                "tuned,proto",
                "meta-test protocols of the final comparison: tuned, published, proto",
            ),
            Key("compare.val-tasks", 30, "meta-val tasks per grid point of the tuned protocol"),
            Key("compare.lrs", "0.03,0.1,0.3", "the tuned protocol's fine-tuning rates"),
            Key("compare.heads", "zero,proto", "the tuned protocol's head starts"),
            Key("compare.best-owner", True, "compare with the best single owner's model"),
            Key(
                "compare.workers",
                0,
                "worker processes of the final comparison on CPU (0 = one per core; 1 = none)",
            ),
            Key("fault.partitions", "", 'test hook: "1=raise,2=sleep:60,3=exit:1"'),
            *(
                Key(f"free.{name}", -1, _PRESET_PLACEHOLDER)
                for name in (
                    "iterations",
                    "warmup",
                    "seed",
                    "checkpoint-every",
                    "teachers-per-iteration",
                    "eval.every",
                    "eval.val-tasks",
                    "eval.test-tasks",
                )
            ),
            Key("free.eval.shots", "", _PRESET_PLACEHOLDER),
            Key("free.meta-learner.arch", "", _PRESET_PLACEHOLDER),
            Key("free.meta-learner.width", -1, _PRESET_PLACEHOLDER),
            Key("free.meta-learner.inner-optimizer", "", _PRESET_PLACEHOLDER),
            Key("free.meta-learner.inner-lr", -1.0, _PRESET_PLACEHOLDER),
            Key("free.meta-learner.reptile-scale", -1.0, _PRESET_PLACEHOLDER),
            Key("free.meta-learner.outer-lr", -1.0, _PRESET_PLACEHOLDER),
            Key("free.meta-learner.init", "", _PRESET_PLACEHOLDER),
            Key("free.screening.steps", -1, _PRESET_PLACEHOLDER),
            Key("free.screening.min-confidence", -1.0, _PRESET_PLACEHOLDER),
            Key("free.screening.min-accuracy", -1.0, _PRESET_PLACEHOLDER),
            Key("free.screening.max-logit", -1.0, _PRESET_PLACEHOLDER),
            Key("free.screening.trigger-steps", -1, _PRESET_PLACEHOLDER),
            Key("free.inversion.inner-steps", -1, _PRESET_PLACEHOLDER),
            Key("free.inversion.bn-weight", -1.0, _PRESET_PLACEHOLDER),
            Key("free.replay.max-meta-batches", -1, _PRESET_PLACEHOLDER),
            Key("free.pool-kd.teachers", -1, _PRESET_PLACEHOLDER),
            Key("free.pool-kd.steps", -1, _PRESET_PLACEHOLDER),
            Key("free.pool-kd.choose", "", _PRESET_PLACEHOLDER),
            Key("free.pool-kd.teacher-precision", "", _PRESET_PLACEHOLDER),
            Key("free.pool-kd.learner-precision", "", _PRESET_PLACEHOLDER),
        )
    }
)
"""Every run-config key the app declares, by name, in ``pyproject.toml`` order."""


_SOURCE_KEYS: tuple[str, ...] = ("data.train", "data.val", "data.test")


def _type_name(kind: type) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[kind]


def _checked(key: Key, value: object) -> Scalar:
    """``value`` if it has the type of ``key``'s default (an int is a float), else raise."""
    kind = type(key.default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise RunConfigError(f"run config {key.name} must be {_type_name(kind)}, got {value!r}")
    assert isinstance(value, bool | int | float | str)
    return value


class RunConfig:
    """A flat run config, checked against :data:`KEYS`, with every default filled in.

    Args:
        values: Flower's ``context.run_config`` (or any subset of it: missing keys take
            their default).

    Raises:
        RunConfigError: a key that is neither in :data:`KEYS` nor a ``free.*`` key, or a
            value whose type differs from its key's default.
    """

    def __init__(self, values: Mapping[str, object] | None = None) -> None:
        given = dict(values or {})
        unknown = sorted(k for k in given if k not in KEYS and not k.startswith("free."))
        removed = [f"{k} ({REMOVED_KEYS[k]})" for k in unknown if k in REMOVED_KEYS]
        if removed:
            raise RunConfigError(f"removed run-config key(s): {'; '.join(removed)}")
        if unknown:
            raise RunConfigError(
                f"unknown run-config key(s) {', '.join(unknown)}; the app declares the keys "
                "of [tool.flwr.app.config] in pyproject.toml"
            )
        self._values: dict[str, object] = {k: key.default for k, key in KEYS.items()}
        for name, value in given.items():
            self._values[name] = _checked(KEYS[name], value) if name in KEYS else value

    def get_int(self, name: str) -> int:
        """The value of the integer key ``name``."""
        return self._typed(name, int)

    def get_float(self, name: str) -> float:
        """The value of the number key ``name``."""
        return self._typed(name, float)

    def get_str(self, name: str) -> str:
        """The value of the string key ``name``."""
        return self._typed(name, str)

    def get_bool(self, name: str) -> bool:
        """The value of the boolean key ``name``."""
        return self._typed(name, bool)

    def free_overrides(self) -> dict[str, object]:
        """``preset`` and every ``free.*`` key that is not a placeholder (-1 or "")."""
        chosen: dict[str, object] = {"preset": self._values["preset"]}
        for name, value in self._values.items():
            if name.startswith("free.") and not (value == -1 or value == ""):
                chosen[name] = value
        return chosen

    def source(self, name: str) -> DataSource:
        """The data source named by ``data.train``, ``data.val`` or ``data.test``."""
        if name not in _SOURCE_KEYS:
            raise RunConfigError(f"{name!r} is not a data-source key: {', '.join(_SOURCE_KEYS)}")
        try:
            return DataSource.parse(self.get_str(name), key=name)
        except DatasetError as err:
            raise RunConfigError(str(err)) from err

    def free_config(self) -> FreeConfig:
        """FREE's configuration: the preset, the ``free.*`` overrides, and the input.

        The meta-learner's input, which is also what the meta-generator produces, is
        ``data.channels`` x ``data.image-size``. ``data.channels = 0`` takes the channels of
        the first source among ``data.test``, ``data.val`` and ``data.train`` that is not
        ``none`` (a folder counts as RGB); ``data.image-size = 0`` keeps the preset's side.

        Raises:
            RunConfigError: a ``free.*`` value, channels or side the configuration refuses.
        """
        try:
            config = FreeConfig.from_run_config(self.free_overrides())
        except ConfigError as err:
            raise RunConfigError(str(err)) from err
        channels, size = self._input(config)
        learner, inversion = config.meta_learner, config.inversion
        try:
            config = replace(
                config,
                meta_learner=replace(learner, channels=channels, image_size=size),
                inversion=replace(inversion, channels=channels, image_size=size),
            )
        except ConfigError as err:
            raise RunConfigError(f"data.image-size = {size}: {err}") from err
        _check_learner_builds(config)
        return config

    def _input(self, config: FreeConfig) -> tuple[int, int]:
        """(channels, side) of the meta-learner's input (see :meth:`free_config`)."""
        channels = self.get_int("data.channels")
        size = self.get_int("data.image-size")
        if channels not in (0, 1, 3):
            raise RunConfigError(f"data.channels must be 0 (from the data), 1 or 3, got {channels}")
        if size < 0:
            raise RunConfigError(f"data.image-size must be 0 (the preset's) or >= 8, got {size}")
        if not channels:
            native = (self.source(k).native_channels() for k in reversed(_SOURCE_KEYS))
            channels = next((c for c in native if c is not None), config.meta_learner.channels)
        return channels, size or config.meta_learner.image_size

    def _typed(self, name: str, kind: type[_T]) -> _T:
        if name not in KEYS or type(KEYS[name].default) is not kind:
            raise RunConfigError(f"{name!r} is not a declared {kind.__name__} run-config key")
        value = self._values[name]
        assert isinstance(value, kind)
        return value


def _check_learner_builds(config: FreeConfig) -> None:
    """Build the meta-learner on the meta device (no memory) so a bad input fails at start."""
    import torch

    from free_common.free.meta_learner import build_meta_learner

    learner = config.meta_learner
    try:
        with torch.device("meta"):
            build_meta_learner(learner)
    except ValueError as err:
        raise RunConfigError(
            f"a {learner.arch} meta-learner cannot take {learner.channels}x{learner.image_size}x"
            f"{learner.image_size} input (data.channels, data.image-size): {err}"
        ) from err


DEFAULTS = RunConfig()
"""The run config with every key at its default."""
