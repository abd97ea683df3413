"""``python -m overture``: the same as the ``overture`` command."""

from overture.cli import app

# A spawned worker process imports this module again, as ``__mp_main__``: it must not run the CLI.
if __name__ == "__main__":
    app()
