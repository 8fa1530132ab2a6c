"""Errors every render backend shares (a module of its own, so backends import it without
importing each other)."""


class RenderError(Exception):
    """A render that this prompt can never produce (bad workflow, validation): not retried."""
