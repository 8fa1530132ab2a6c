"""``tower``: run workers, submit and follow scenes, inspect results, replay and evaluate, manage
topics and schemas. The command line is a Typer app (options, help, errors: ``app.py``); each
command's implementation is a ``cmd_*`` function of the parsed options and the settings, kept with
its command group: ``scenes.py``, ``learning.py``, ``services.py``."""

from tower.cli import scenes  # noqa: F401, I001 - importing a group registers its commands, in this order
from tower.cli import learning  # noqa: F401
from tower.cli import services  # noqa: F401
from tower.cli.app import app, main

__all__ = ["app", "main"]
