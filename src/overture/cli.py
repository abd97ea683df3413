"""The ``overture`` command: serve the API, run a model, inspect models and predictions."""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
import time
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from overture.config import Settings
from overture.engine.netpolicy import parse_networks
from overture.models.musicgen.settings import MusicGenSettings
from overture.models.riffusion.settings import RiffusionSettings
from overture.outputs import FILE_REF, file_refs
from overture.runtime.checkpoints import CheckpointSettings
from overture.status import TERMINAL, Status

T = TypeVar("T")

app = typer.Typer(help="Overture: Replicate's music models on your own machines.", no_args_is_help=True)
predictions_app = typer.Typer(help="Inspect and cancel predictions on a running server.", no_args_is_help=True)
app.add_typer(predictions_app, name="predictions")
console = Console(stderr=True)
#: What an option left out means; options read their defaults here rather than restate them.
DEFAULTS = Settings()


def _split(values: list[str] | None) -> list[str]:
    """Accept repeated options, comma-separated lists and whitespace-separated env values alike."""
    return [item.strip() for value in values or [] for item in value.replace(",", " ").split() if item.strip()]


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="OVERTURE_HOST", help="Address to bind.")] = DEFAULTS.host,
    port: Annotated[int, typer.Option(envvar="OVERTURE_PORT")] = DEFAULTS.port,
    data_dir: Annotated[Path, typer.Option(envvar="OVERTURE_DATA_DIR")] = DEFAULTS.data_dir,
    public_url: Annotated[
        str | None, typer.Option(envvar="OVERTURE_PUBLIC_URL", help="Base of every absolute URL the server emits.")
    ] = None,
    token: Annotated[
        list[str] | None, typer.Option(envvar="OVERTURE_API_TOKEN", help="Accepted API token (repeatable).")
    ] = None,
    database_url: Annotated[str | None, typer.Option(envvar="OVERTURE_DATABASE_URL")] = None,
    retention_hours: Annotated[float | None, typer.Option(envvar="OVERTURE_RETENTION_HOURS")] = None,
    cache: Annotated[
        bool, typer.Option(envvar="OVERTURE_CACHE", help="Reuse results of seeded inputs.")
    ] = DEFAULTS.cache,
    max_upload_bytes: Annotated[int, typer.Option(envvar="OVERTURE_MAX_UPLOAD_BYTES")] = DEFAULTS.max_upload_bytes,
    max_input_file_bytes: Annotated[
        int, typer.Option(envvar="OVERTURE_MAX_INPUT_FILE_BYTES", help="Largest file input from a URL or data: URI.")
    ] = DEFAULTS.max_input_file_bytes,
    input_download_timeout: Annotated[
        float, typer.Option(envvar="OVERTURE_INPUT_DOWNLOAD_TIMEOUT", help="Seconds a file input may take to download.")
    ] = DEFAULTS.input_download_seconds,
    page_size: Annotated[int, typer.Option(envvar="OVERTURE_PAGE_SIZE", min=1, max=1000)] = DEFAULTS.page_size,
    max_request_bytes: Annotated[
        int, typer.Option(envvar="OVERTURE_MAX_REQUEST_BYTES", help="Largest JSON request body.")
    ] = DEFAULTS.max_request_bytes,
    prediction_timeout: Annotated[
        float | None,
        typer.Option(envvar="OVERTURE_PREDICTION_TIMEOUT", help="Cancel predictions unfinished after this many seconds."),
    ] = None,
    input_allow_private: Annotated[
        bool | None,
        typer.Option(
            "--input-allow-private/--no-input-allow-private",
            envvar="OVERTURE_INPUT_ALLOW_PRIVATE",
            help="Fetch file inputs from private/loopback addresses (default: yes).",
        ),
    ] = None,
    input_allow_cidr: Annotated[
        list[str] | None,
        typer.Option(
            envvar="OVERTURE_INPUT_ALLOW_CIDRS",
            help="Fetch file inputs from this range even where the rules refuse it, e.g. 169.254.0.0/16 "
            "(repeatable; the longest matching range wins).",
        ),
    ] = None,
    input_deny_cidr: Annotated[
        list[str] | None,
        typer.Option(envvar="OVERTURE_INPUT_DENY_CIDRS", help="Never fetch file inputs from this range (repeatable)."),
    ] = None,
    webhook_allow_private: Annotated[
        bool | None,
        typer.Option(
            "--webhook-allow-private/--no-webhook-allow-private",
            envvar="OVERTURE_WEBHOOK_ALLOW_PRIVATE",
            help="Allow webhooks to private/loopback addresses (default: yes).",
        ),
    ] = None,
    webhook_allow_cidr: Annotated[
        list[str] | None,
        typer.Option(
            envvar="OVERTURE_WEBHOOK_ALLOW_CIDRS",
            help="Send webhooks to this range even where the rules refuse it (repeatable).",
        ),
    ] = None,
    webhook_deny_cidr: Annotated[
        list[str] | None,
        typer.Option(envvar="OVERTURE_WEBHOOK_DENY_CIDRS", help="Never send webhooks to this range (repeatable)."),
    ] = None,
    webhook_retry_hours: Annotated[
        float, typer.Option(envvar="OVERTURE_WEBHOOK_RETRY_HOURS", help="Retry failed webhooks this long.")
    ] = DEFAULTS.webhook_retry_hours,
    webhook_backoff_seconds: Annotated[
        float, typer.Option(envvar="OVERTURE_WEBHOOK_BACKOFF_SECONDS", help="First retry delay; doubles each time.")
    ] = DEFAULTS.webhook_backoff_seconds,
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(envvar="OVERTURE_CHECKPOINTS", help="HUB_ID=DIR: load this checkpoint from a local directory."),
    ] = None,
    substitute: Annotated[
        list[str] | None,
        typer.Option(envvar="OVERTURE_SUBSTITUTES", help="FROM=TO: serve checkpoint TO when FROM is asked for."),
    ] = None,
    allow_checkpoint: Annotated[
        list[str] | None,
        typer.Option(envvar="OVERTURE_ALLOWED_CHECKPOINTS", help="Serve only these checkpoints (repeatable)."),
    ] = None,
    model_memory_gb: Annotated[
        float | None, typer.Option(envvar="OVERTURE_MODEL_MEMORY_GB", help="Budget for loaded models (LRU).")
    ] = None,
    device: Annotated[str | None, typer.Option(envvar="OVERTURE_DEVICE", help="cuda, cpu, ... (default: auto).")] = None,
    batch_memory_gb: Annotated[
        float | None,
        typer.Option(
            envvar="OVERTURE_BATCH_MEMORY_GB",
            min=0,
            help="Key/value memory of one running MusicGen batch (default: 1/4 of RAM, 1/2 of free GPU memory).",
        ),
    ] = None,
    batch_slots: Annotated[
        int | None,
        typer.Option(
            envvar="OVERTURE_BATCH_SLOTS",
            min=1,
            help="Most rows in one running MusicGen batch; guidance takes two per prediction "
            f"(default: {MusicGenSettings.batch_slots}).",
        ),
    ] = None,
    riffusion_seed_images: Annotated[
        Path | None,
        typer.Option(
            envvar="OVERTURE_RIFFUSION_SEED_IMAGES",
            help="Directory of <id>.png seed spectrograms that riffusion uses in place of its own.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            envvar="OVERTURE_CONFIG",
            help="TOML file: checkpoints, substitutes (tables), allowed_checkpoints, model_memory_gb, device, "
            "batch_memory_gb, batch_slots, riffusion_seed_images, input_allow_private, input_allow_cidrs, "
            "input_deny_cidrs, webhook_allow_private, webhook_allow_cidrs, webhook_deny_cidrs.",
        ),
    ] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option(envvar="OVERTURE_SSL_CERTFILE", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(envvar="OVERTURE_SSL_KEYFILE", help="Its private key (PEM).")] = None,
    model_module: Annotated[
        list[str] | None,
        typer.Option(envvar="OVERTURE_MODEL_MODULES", help="Importable module whose MODELS list is also served."),
    ] = None,
) -> None:
    """Start the HTTP server."""
    import uvicorn

    from overture.api.app import create_app

    table = _config_table(config)
    settings = Settings(
        host=host,
        port=port,
        data_dir=data_dir,
        public_url=public_url.rstrip("/") if public_url else None,
        tokens=_split(token),
        database_url=database_url,
        retention_hours=retention_hours,
        cache=cache,
        max_upload_bytes=max_upload_bytes,
        max_input_file_bytes=max_input_file_bytes,
        input_download_seconds=input_download_timeout,
        page_size=page_size,
        max_request_bytes=max_request_bytes,
        prediction_timeout_seconds=prediction_timeout,
        **_address_settings(
            table,
            {"input_allow_private": input_allow_private, "webhook_allow_private": webhook_allow_private},
            {
                "input_allow_cidrs": input_allow_cidr,
                "input_deny_cidrs": input_deny_cidr,
                "webhook_allow_cidrs": webhook_allow_cidr,
                "webhook_deny_cidrs": webhook_deny_cidr,
            },
        ),
        webhook_retry_hours=webhook_retry_hours,
        webhook_backoff_seconds=webhook_backoff_seconds,
        model_modules=_split(model_module),
        checkpoints=_checkpoint_settings(checkpoint, substitute, allow_checkpoint, model_memory_gb, device, table),
        model_settings=_model_settings(table, batch_memory_gb, batch_slots, riffusion_seed_images),
    )
    generated = not settings.tokens
    application = create_app(settings)
    # The client wraps only https: output URLs in FileOutput (.read()), so TLS matters to users.
    scheme = "https" if ssl_certfile else "http"
    base = settings.public_url or f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    console.print(f"Overture is serving on [bold]{base}[/bold]")
    console.print(f"  export REPLICATE_BASE_URL={base}")
    if generated:
        console.print(f"  export REPLICATE_API_TOKEN={settings.tokens[0]}")
        console.print(f"  (token generated and kept in {settings.data_dir / 'api-token'})")
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        # Longer than any client's idle-connection expiry (httpx: 5 s), so a client never reuses a
        # pooled connection the server is closing at that moment (a ReadError under load).
        timeout_keep_alive=75,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for item in _split(values):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"expected FROM=TO, got {item!r}", param_hint=option)
        pairs[key] = value
    return pairs


def _config_table(config: Path | None) -> dict[str, Any]:
    """The config file's keys, read once; a file TOML cannot read stops the server at start-up."""
    if config is None:
        return {}
    try:
        return tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(f"{config}: {exc}", param_hint="--config") from None


def _address_settings(
    table: dict[str, Any], allow_private: dict[str, bool | None], ranges: dict[str, list[str] | None]
) -> dict[str, Any]:
    """The address policy's settings (engine/netpolicy.py): options first, then the config file's
    keys of the same names. Ranges are parsed here, so that a typo stops the server at start-up."""
    settings: dict[str, Any] = {}
    for key, value in allow_private.items():
        settings[key] = table.get(key, True) if value is None else value
        if not isinstance(settings[key], bool):
            raise typer.BadParameter(f"{key} must be true or false, not {settings[key]!r}", param_hint="--config")
    for key, values in ranges.items():
        configured = table.get(key, [])
        if not (isinstance(configured, list) and all(isinstance(item, str) for item in configured)):
            raise typer.BadParameter(f"{key} must be a list of ranges, such as [\"10.0.0.0/8\"]", param_hint="--config")
        try:
            settings[key] = parse_networks(_split(values) or configured)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=f"--{key.replace('_', '-').removesuffix('s')}") from None
    return settings


def _layered(given: Any, table: dict[str, Any], key: str) -> Any:
    """The option's value (or its env var's), else the config file's ``key``; None when neither
    gives one, which leaves the setting to its dataclass's default."""
    return given if given is not None else table.get(key)


def _checkpoint_settings(
    checkpoint: list[str] | None,
    substitute: list[str] | None,
    allow: list[str] | None,
    memory_gb: float | None,
    device: str | None,
    table: dict[str, Any],
) -> CheckpointSettings:
    """Options first, then the config file for whatever they leave out."""
    dirs = {**table.get("checkpoints", {}), **_pairs(checkpoint, "--checkpoint")}
    allowed = _split(allow) or table.get("allowed_checkpoints")
    memory = _layered(memory_gb, table, "model_memory_gb")
    return CheckpointSettings(
        local_dirs={k: Path(v).expanduser() for k, v in dirs.items()},
        substitutes={**table.get("substitutes", {}), **_pairs(substitute, "--substitute")},
        allowed=frozenset(allowed) if allowed else None,
        memory_budget_bytes=int(memory * 2**30) if memory is not None else None,
        device=_layered(device, table, "device"),
    )


def _model_settings(
    table: dict[str, Any], batch_memory_gb: float | None, batch_slots: int | None, seed_images: Path | None
) -> dict[type, Any]:
    """Each model package's settings dataclass (``Settings.model_settings``), options first, then
    the config file."""
    batch_memory = _layered(batch_memory_gb, table, "batch_memory_gb")
    slots = _layered(batch_slots, table, "batch_slots")
    seed_dir = _layered(seed_images, table, "riffusion_seed_images")
    if seed_dir is not None:
        seed_dir = Path(seed_dir).expanduser()
        if not seed_dir.is_dir():
            # Said at start-up: otherwise every request would quietly get the built-in seeds.
            raise typer.BadParameter(f"{seed_dir} is not a directory", param_hint="--riffusion-seed-images")
    musicgen = _given(
        MusicGenSettings,
        batch_memory_bytes=int(batch_memory * 2**30) if batch_memory is not None else None,
        batch_slots=slots,
    )
    return {MusicGenSettings: musicgen, RiffusionSettings: RiffusionSettings(seed_images=seed_dir)}


def _given(kind: type[T], **values: Any) -> T:
    """``kind`` with the values given; those left None keep the dataclass's defaults."""
    return kind(**{key: value for key, value in values.items() if value is not None})


def _server() -> tuple[str, str] | None:
    base = os.environ.get("OVERTURE_BASE_URL") or os.environ.get("REPLICATE_BASE_URL")
    if not base:
        return None
    token = os.environ.get("OVERTURE_API_TOKEN") or os.environ.get("REPLICATE_API_TOKEN") or ""
    if not token:
        token_file = Path(os.environ.get("OVERTURE_DATA_DIR", DEFAULTS.data_dir)) / "api-token"
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


def _first_url(output: Any) -> str | None:
    if isinstance(output, str):
        return output
    if isinstance(output, list) and output:
        return _first_url(output[0])
    if isinstance(output, dict):
        return next((u for u in map(_first_url, output.values()) if u), None)
    return None


@app.command()
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
        prediction, data = _run_local(ref, values)
    if prediction["status"] != Status.SUCCEEDED:
        console.print(f"Prediction {prediction['status']}: {prediction.get('error') or ''}", style="red")
        raise typer.Exit(1)
    if output is not None and data is not None:
        output.write_bytes(data)
        console.print(f"Wrote {output} ({len(data)} bytes)")
    else:
        typer.echo(json.dumps(prediction["output"]))


def _watch(fetch: Any) -> dict[str, Any]:
    """Poll ``fetch()`` until the prediction ends, drawing its progress bar."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(Status.STARTING, total=100)
        while True:
            prediction = fetch()
            percent = _percent(prediction.get("logs") or "")
            bar.update(task, description=prediction["status"], completed=percent)
            if prediction["status"] in TERMINAL:
                bar.update(task, completed=100 if prediction["status"] == Status.SUCCEEDED else percent)
                return prediction
            time.sleep(0.2)


def _percent(logs: str) -> float:
    for line in reversed(logs.splitlines()):
        head = line.split("%|", 1)
        if len(head) == 2 and head[0].strip().isdigit():
            return float(head[0].strip())
    return 0.0


def _run_remote(client: httpx.Client, ref: str, values: dict[str, Any]) -> dict[str, Any]:
    model, _, version = ref.partition(":")
    if version:
        created = _check(client.post("/v1/predictions", json={"version": ref, "input": values}))
    else:
        created = _check(client.post(f"/v1/models/{model}/predictions", json={"input": values}))
    return _watch(lambda: _check(client.get(f"/v1/predictions/{created['id']}")))


def _download(client: httpx.Client, prediction: dict[str, Any]) -> bytes | None:
    url = _first_url(prediction.get("output"))
    return None if url is None else client.get(url).raise_for_status().content


def _run_local(ref: str, values: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """Run through the same engine as the server, on a throwaway data directory."""
    from overture.engine.engine import Engine
    from overture.errors import InvalidInput, UnknownModel
    from overture.models.registry import default_registry
    from overture.store.store import Store

    with tempfile.TemporaryDirectory(prefix="overture-run-") as tmp:
        settings = Settings(data_dir=Path(tmp), cache=False)
        store = Store(settings.data_dir)
        engine = Engine(settings, store, default_registry(_split([os.environ.get("OVERTURE_MODEL_MODULES", "")])))
        engine.start()
        try:
            model, version = engine.registry.version(ref)
            row = engine.create("local", model, version, values)
        except (UnknownModel, InvalidInput) as exc:
            console.print(str(exc), style="red")
            raise typer.Exit(2) from None
        try:
            final = _watch(lambda: _local_view(store.prediction(row.id)))
            ref_value = next((ref[FILE_REF] for ref in file_refs(store.prediction(row.id).output)), None)
            data = store.output_path(ref_value).read_bytes() if ref_value else None
        finally:
            engine.stop()
            store.close()
    return final, data


def _local_view(row: Any) -> dict[str, Any]:
    return {"status": row.status, "logs": row.logs, "error": row.error, "output": row.output}


@app.command()
def models() -> None:
    """List the models: the server's when REPLICATE_BASE_URL is set, else the built-in ones."""
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
