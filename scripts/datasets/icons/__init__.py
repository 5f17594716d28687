"""Renderer of the embedded icon benchmark (see ``scripts/datasets/render_icons.py``)."""
