"""Renderer of the embedded glyph benchmark (see ``scripts/datasets/render_glyphs.py``)."""
