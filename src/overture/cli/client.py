"""Commands that talk to a running server (``REPLICATE_BASE_URL`` or ``OVERTURE_BASE_URL``):
``run``, ``models`` and ``predictions``; ``run`` and ``models`` work in this process without one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from overture.cli.common import console, watch
from overture.cli.local import run_local
from overture.cli.weights import local_table
from overture.config import Settings

predictions_app = typer.Typer(help="Inspect and cancel predictions on a running server.", no_args_is_help=True)


def run(
    ref: Annotated[str, typer.Argument(help="MODEL[:VERSION], e.g. overture/synth")],
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="key=value (repeatable)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the output file.")] = None,
) -> None:
    """Run a model: against the server in REPLICATE_BASE_URL, otherwise in this process."""
    values = _parse_inputs(inputs or [])
    if _server() is not None:
        with _client() as client:
            prediction = _run_remote(client, ref, values)
            data = _download(client, prediction) if output else None
    else:
        prediction, data = run_local(ref, values)
    if prediction["status"] != "succeeded":
        console.print(f"Prediction {prediction['status']}: {prediction.get('error') or ''}", style="red")
        raise typer.Exit(1)
    if output is not None and data is not None:
        output.write_bytes(data)
        console.print(f"Wrote {output} ({len(data)} bytes)")
    else:
        typer.echo(json.dumps(prediction["output"]))


def models(
    local: Annotated[
        bool, typer.Option("--local", help="Each variant's weights in HF_HOME: present, size, memory needed.")
    ] = False,
) -> None:
    """List the models: the server's when REPLICATE_BASE_URL is set, else the built-in ones."""
    if local:
        local_table()
        return
    table = Table("model", "latest version", "description")
    if _server() is not None:
        with _client() as client:
            for m in _check(client.get("/v1/models"))["results"]:
                table.add_row(f"{m['owner']}/{m['name']}", m["latest_version"]["id"], m["description"] or "")
    else:
        from overture.models.registry import default_registry

        for m in default_registry().models.values():
            table.add_row(m.ref, m.latest_version.id, m.description)
    Console().print(table)


@predictions_app.command("list")
def predictions_list(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20) -> None:
    table = Table("id", "model", "status", "created")
    with _client() as client:
        page: dict[str, Any] = _check(client.get("/v1/predictions"))
        shown = 0
        while True:
            for p in page["results"]:
                if shown >= limit:
                    break
                table.add_row(p["id"], p["model"], p["status"], p["created_at"])
                shown += 1
            if shown >= limit or not page.get("next"):
                break
            page = _check(client.get(page["next"]))
    Console().print(table)


@predictions_app.command("get")
def predictions_get(prediction_id: str) -> None:
    with _client() as client:
        typer.echo(json.dumps(_check(client.get(f"/v1/predictions/{prediction_id}")), indent=2))


@predictions_app.command("cancel")
def predictions_cancel(prediction_id: str) -> None:
    with _client() as client:
        prediction = _check(client.post(f"/v1/predictions/{prediction_id}/cancel"))
        typer.echo(f"{prediction['id']}: {prediction['status']}")


def _server() -> tuple[str, str] | None:
    base = os.environ.get("OVERTURE_BASE_URL") or os.environ.get("REPLICATE_BASE_URL")
    if not base:
        return None
    token = os.environ.get("OVERTURE_API_TOKEN") or os.environ.get("REPLICATE_API_TOKEN") or ""
    if not token:
        token_file = Path(os.environ.get("OVERTURE_DATA_DIR", Settings.data_dir)) / "api-token"
        token = token_file.read_text().strip() if token_file.exists() else ""
    return base.rstrip("/"), token


def _client() -> httpx.Client:
    server = _server()
    if server is None:
        console.print("Set REPLICATE_BASE_URL (or OVERTURE_BASE_URL) to the server's URL.", style="red")
        raise typer.Exit(2)
    base, token = server
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    """``-i key=value``: values are JSON when they parse as JSON (numbers, booleans), else strings."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected key=value, got {pair!r}")
        try:
            inputs[key] = json.loads(value)
        except json.JSONDecodeError:
            inputs[key] = value
    return inputs


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        console.print(f"Error {response.status_code}: {detail}", style="red")
        raise typer.Exit(1)
    return response.json()


def _run_remote(client: httpx.Client, ref: str, values: dict[str, Any]) -> dict[str, Any]:
    model, _, version = ref.partition(":")
    if version:
        created = _check(client.post("/v1/predictions", json={"version": ref, "input": values}))
    else:
        created = _check(client.post(f"/v1/models/{model}/predictions", json={"input": values}))
    return watch(lambda: _check(client.get(f"/v1/predictions/{created['id']}")))


def _download(client: httpx.Client, prediction: dict[str, Any]) -> bytes | None:
    url = _first_url(prediction.get("output"))
    return None if url is None else client.get(url).raise_for_status().content


def _first_url(output: Any) -> str | None:
    if isinstance(output, str):
        return output
    if isinstance(output, list) and output:
        return _first_url(output[0])
    if isinstance(output, dict):
        return next((u for u in map(_first_url, output.values()) if u), None)
    return None
