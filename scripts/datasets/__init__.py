"""Dataset renderers, run as ``python -m scripts.datasets.<name>``."""
