"""FREE-Fed shared code: models, data, the FREE algorithm, export and signing."""

__version__ = "0.1.0"
