"""Command-line scripts, run as ``python -m scripts.<name>``."""
