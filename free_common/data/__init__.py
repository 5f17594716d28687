"""Datasets: the shipped glyph benchmark, standard loaders, episode sampling."""
