"""Render backends: turn a refined prompt into frames in the media store.

``procedural`` (built in, CPU, deterministic) is selected with ``TOWER_RENDER_BACKEND``; it is a
real backend, never a silent fallback for another one.
"""
