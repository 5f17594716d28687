"""Renderer of the embedded glyph benchmark (see ``scripts/render_glyphs.py``)."""
