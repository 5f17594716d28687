"""The README's benchmarks; each writes its results to ``scripts/results/``.

What each measures, its presets and its tables: ``scripts/README.md``.
"""
