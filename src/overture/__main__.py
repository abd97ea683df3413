"""``python -m overture``: the same as the ``overture`` command."""

from overture.cli import app

app()
