"""Async ComfyUI client and render pool: see docs/COMFYUI.md.

Modules: ``client`` (HTTP), ``socket`` (websocket), ``jobs`` (one prompt), ``pool`` (servers),
``workflow``/``ui_format`` (templates), ``outputs``/``media`` (files and frames), ``progress``,
``errors``, ``messages``.
"""
