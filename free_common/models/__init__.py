"""Model registry: Conv4, CIFAR-style ResNet-10/18 and the FREE meta-generator."""

from free_common.models.base import Classifier
from free_common.models.generator import GeneratorSpec, MetaGenerator, build_generator
from free_common.models.registry import MODEL_BUILDERS, build_model, count_macs, count_parameters
from free_common.models.spec import ARCHITECTURES, ModelSpec, SpecError

__all__ = [
    "ARCHITECTURES",
    "MODEL_BUILDERS",
    "Classifier",
    "GeneratorSpec",
    "MetaGenerator",
    "ModelSpec",
    "SpecError",
    "build_generator",
    "build_model",
    "count_macs",
    "count_parameters",
]
