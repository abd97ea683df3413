"""The ``overture`` command: serve the API, run a model, inspect models and predictions."""

from __future__ import annotations

import typer

from overture.cli import client, serve, usage, weights
from overture.cli.database import db_app

app = typer.Typer(help="Overture: Replicate's music models on your own machines.", no_args_is_help=True)
app.add_typer(client.predictions_app, name="predictions")
app.add_typer(db_app, name="db")
app.command()(serve.serve)
app.command()(client.run)
app.command()(client.models)
app.command()(weights.pull)
app.command()(weights.prune)
app.command()(usage.usage)
