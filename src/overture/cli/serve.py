"""``overture serve``: the server command, and its options (with their env vars and the config
file's keys) read into ``Settings``.

Options default to the dataclasses' own defaults (their class attributes), so that each default is
stated once; an option the config file can also set defaults to None until the two are layered.
"""

from __future__ import annotations

import logging
import logging.config
import math
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from overture.cli.common import console, split
from overture.cli.usage import price_table
from overture.config import RATE_LIMIT_WINDOW_RANGE, WORKERS, Settings, Workers
from overture.engine.netpolicy import parse_networks
from overture.engine.workers.transport import ClusterUnavailable
from overture.logs import LOG_FORMATS, LogFormat, configure_server, server_config
from overture.models.musicgen.settings import MusicGenSettings
from overture.models.riffusion.settings import RiffusionSettings
from overture.prices import PERIODS
from overture.runtime.checkpoints import CheckpointSettings
from overture.upstreams import Route, Upstream, parse_route, parse_upstream


def serve(
    host: Annotated[str, typer.Option(envvar="OVERTURE_HOST", help="Address to bind.")] = Settings.host,
    port: Annotated[int, typer.Option(envvar="OVERTURE_PORT")] = Settings.port,
    data_dir: Annotated[Path, typer.Option(envvar="OVERTURE_DATA_DIR")] = Settings.data_dir,
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
    ] = Settings.cache,
    max_upload_bytes: Annotated[int, typer.Option(envvar="OVERTURE_MAX_UPLOAD_BYTES")] = Settings.max_upload_bytes,
    max_input_file_bytes: Annotated[
        int, typer.Option(envvar="OVERTURE_MAX_INPUT_FILE_BYTES", help="Largest file input from a URL or data: URI.")
    ] = Settings.max_input_file_bytes,
    input_download_timeout: Annotated[
        float, typer.Option(envvar="OVERTURE_INPUT_DOWNLOAD_TIMEOUT", help="Seconds a file input may take to download.")
    ] = Settings.input_download_seconds,
    page_size: Annotated[int, typer.Option(envvar="OVERTURE_PAGE_SIZE", min=1, max=1000)] = Settings.page_size,
    max_request_bytes: Annotated[
        int, typer.Option(envvar="OVERTURE_MAX_REQUEST_BYTES", help="Largest JSON request body.")
    ] = Settings.max_request_bytes,
    prediction_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="OVERTURE_PREDICTION_TIMEOUT", help="Cancel predictions unfinished after this many seconds."
        ),
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
    ] = Settings.webhook_retry_hours,
    webhook_backoff_seconds: Annotated[
        float, typer.Option(envvar="OVERTURE_WEBHOOK_BACKOFF_SECONDS", help="First retry delay; doubles each time.")
    ] = Settings.webhook_backoff_seconds,
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
    device: Annotated[
        str | None, typer.Option(envvar="OVERTURE_DEVICE", help="cuda, cpu, ... (default: auto).")
    ] = None,
    workers: Annotated[
        Workers | None,
        typer.Option(
            envvar="OVERTURE_WORKERS",
            help="Where model pools run: process, in child worker processes; inline, as threads in the server "
            f"process, for debugging (default: {Settings.workers}).",
        ),
    ] = None,
    cancel_grace: Annotated[
        float | None,
        typer.Option(
            envvar="OVERTURE_CANCEL_GRACE",
            metavar="SECONDS",
            help="How long a running prediction may ignore a cancel before its worker process is killed and "
            f"restarted (default: {Settings.cancel_grace_seconds:g}).",
        ),
    ] = None,
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
            "workers, cancel_grace, batch_memory_gb, batch_slots, riffusion_seed_images, input_allow_private, "
            "input_allow_cidrs, input_deny_cidrs, webhook_allow_private, webhook_allow_cidrs, webhook_deny_cidrs, "
            "ray, replicas and gpus_per_worker (tables), ray_wait, max_attempts, prices (a table), upstream_budget, "
            "upstream_budget_period, upstreams (a table of tables with url and token), routes (a table), "
            "burst_after, upstream_timeout.",
        ),
    ] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option(envvar="OVERTURE_SSL_CERTFILE", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option(envvar="OVERTURE_SSL_KEYFILE", help="Its private key (PEM).")
    ] = None,
    model_module: Annotated[
        list[str] | None,
        typer.Option(envvar="OVERTURE_MODEL_MODULES", help="Importable module whose MODELS list is also served."),
    ] = None,
    rate_limit_creates: Annotated[
        int,
        typer.Option(
            envvar="OVERTURE_RATE_LIMIT_CREATES", min=0, help="Prediction creates per token per window (0: no limit)."
        ),
    ] = Settings.rate_limit_creates,
    rate_limit_requests: Annotated[
        int,
        typer.Option(
            envvar="OVERTURE_RATE_LIMIT_REQUESTS", min=0, help="Other requests per token per window (0: no limit)."
        ),
    ] = Settings.rate_limit_requests,
    rate_limit_window: Annotated[
        float,
        typer.Option(
            envvar="OVERTURE_RATE_LIMIT_WINDOW",
            min=RATE_LIMIT_WINDOW_RANGE[0],
            max=RATE_LIMIT_WINDOW_RANGE[1],
            metavar="SECONDS",
            help="Window of the limits (up to a day).",
        ),
    ] = Settings.rate_limit_window_seconds,
    max_queued_per_token: Annotated[
        int,
        typer.Option(
            envvar="OVERTURE_MAX_QUEUED_PER_TOKEN", min=0, help="Predictions a token may have waiting (0: no cap)."
        ),
    ] = Settings.max_queued_per_token,
    # -- Ray (docs/cluster.md) --
    ray: Annotated[
        str | None,
        typer.Option(
            envvar="OVERTURE_RAY",
            metavar="ADDRESS",
            help="Run model pools as actors on this Ray cluster (auto, or its head's HOST:PORT; the server runs "
            "on a node of the cluster), or start one on this machine with 'local' (needs overture[ray]).",
        ),
    ] = None,
    replicas: Annotated[
        list[str] | None,
        typer.Option(
            envvar="OVERTURE_REPLICAS",
            metavar="MODEL=N",
            help="With --ray: run N actors of this model's pool, or 'auto', one per GPU of the cluster "
            "(repeatable; default 1).",
        ),
    ] = None,
    gpus_per_worker: Annotated[
        list[str] | None,
        typer.Option(
            envvar="OVERTURE_GPUS_PER_WORKER",
            metavar="MODEL=GPUS",
            help="With --ray: GPUs each actor of this model reserves, e.g. meta/musicgen=0.5 (repeatable; default "
            "1 on a cluster with GPUs, 0 for CPU-only models).",
        ),
    ] = None,
    ray_wait: Annotated[
        float | None,
        typer.Option(
            envvar="OVERTURE_RAY_WAIT",
            metavar="SECONDS",
            help="With --ray: how long predictions wait for a cluster that does not answer before they fail "
            f"(default: {Settings.ray_wait_seconds:g}).",
        ),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(
            envvar="OVERTURE_MAX_ATTEMPTS",
            min=1,
            help="Runs of a prediction whose worker (process, actor or node) is lost while running it, before it "
            f"produced output; a job still queued there is sent again for free (default: {Settings.max_attempts}).",
        ),
    ] = None,
    # -- costs of upstream predictions (docs/usage.md) --
    prices: Annotated[
        Path | None,
        typer.Option(
            envvar="OVERTURE_PRICES",
            metavar="FILE",
            help="TOML price table ([providers], [hardware]: USD per second; [models]: USD per prediction) over "
            "the config file's [prices] and the built-in defaults (docs/usage.md).",
        ),
    ] = None,
    upstream_budget: Annotated[
        float | None,
        typer.Option(
            envvar="OVERTURE_UPSTREAM_BUDGET",
            metavar="USD",
            help="Each token's cap on the estimated cost of its upstream predictions per period; past it, they "
            "are refused with 402 (default: no cap).",
        ),
    ] = None,
    upstream_budget_period: Annotated[
        str | None,
        typer.Option(
            envvar="OVERTURE_UPSTREAM_BUDGET_PERIOD",
            help=f"{', '.join(PERIODS)} (UTC; a week starts on Monday) (default: {Settings.upstream_budget_period}).",
        ),
    ] = None,
    # -- providers: upstream Replicate APIs (docs/providers.md) --
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            envvar="OVERTURE_UPSTREAMS",
            metavar="NAME=URL",
            help="Another Replicate API predictions can be relayed to: https://api.replicate.com or another "
            "Overture (repeatable).",
        ),
    ] = None,
    upstream_token: Annotated[
        list[str] | None,
        typer.Option(
            envvar="OVERTURE_UPSTREAM_TOKENS",
            metavar="NAME=TOKEN",
            help="The API token for an upstream (repeatable); or OVERTURE_UPSTREAM_TOKEN_<NAME>. Never logged.",
        ),
    ] = None,
    route: Annotated[
        list[str] | None,
        typer.Option(
            envvar="OVERTURE_ROUTES",
            metavar="MODEL[:VERSION]=ROUTE",
            help="Where a model runs: local (the default), upstream:NAME, or burst:NAME (here, but upstream when "
            "it would wait longer than --burst-after) (repeatable).",
        ),
    ] = None,
    burst_after: Annotated[
        float | None,
        typer.Option(
            envvar="OVERTURE_BURST_AFTER",
            metavar="SECONDS",
            help="With a burst route, the longest estimated wait here before a prediction goes upstream "
            f"(default: {Settings.burst_after_seconds:g}).",
        ),
    ] = None,
    upstream_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="OVERTURE_UPSTREAM_TIMEOUT",
            metavar="SECONDS",
            help="How long an upstream may be unreachable or answer 5xx before its prediction fails "
            f"(default: {Settings.upstream_timeout_seconds:g}).",
        ),
    ] = None,
    # -- for operators: metrics and logs (docs/operations.md) --
    metrics: Annotated[
        bool,
        typer.Option("--metrics/--no-metrics", envvar="OVERTURE_METRICS", help="Serve GET /metrics (Prometheus)."),
    ] = Settings.metrics,
    metrics_token: Annotated[
        str | None,
        typer.Option(envvar="OVERTURE_METRICS_TOKEN", help="A token GET /metrics accepts besides the API tokens."),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(envvar="OVERTURE_LOG_FORMAT", help=f"{' or '.join(LOG_FORMATS)} (json: one object per line)."),
    ] = Settings.log_format,
    access_log: Annotated[
        bool,
        typer.Option("--access-log/--no-access-log", envvar="OVERTURE_ACCESS_LOG", help="Log every HTTP request."),
    ] = Settings.access_log,
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
        tokens=split(token),
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
        model_modules=split(model_module),
        checkpoints=_checkpoint_settings(checkpoint, substitute, allow_checkpoint, model_memory_gb, device, table),
        model_settings=_model_settings(table, batch_memory_gb, batch_slots, riffusion_seed_images),
        **_worker_settings(table, workers, cancel_grace),
        rate_limit_creates=rate_limit_creates,
        rate_limit_requests=rate_limit_requests,
        rate_limit_window_seconds=rate_limit_window,
        max_queued_per_token=max_queued_per_token,
        **_cluster_settings(table, ray, replicas, gpus_per_worker, ray_wait, max_attempts),
        **_cost_settings(table, prices, upstream_budget, upstream_budget_period),
        **_provider_settings(table, upstream, upstream_token, route, burst_after, upstream_timeout),
        metrics=metrics,
        metrics_token=metrics_token,
        log_format=log_format,
        access_log=access_log,
    )
    log_config = server_config(settings.log_format, settings.access_log)
    # Now, not when uvicorn starts: what start-up logs (recovery, say) comes out in the chosen format.
    logging.config.dictConfig(log_config)
    configure_server(settings.log_format)
    generated = not settings.tokens
    try:
        application = create_app(settings)
    except ClusterUnavailable as exc:
        console.print(f"[red]Error:[/red] {escape(str(exc))}")  # escaped: "overture[ray]" is not markup
        raise typer.Exit(2) from None
    # The client wraps only https: output URLs in FileOutput (.read()), so TLS matters to users.
    scheme = "https" if ssl_certfile else "http"
    base = settings.public_url or f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    _announce(settings, base, generated)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level=None,
        log_config=log_config,
        access_log=settings.access_log,
        timeout_graceful_shutdown=5,
        # Longer than any client's idle-connection expiry (httpx: 5 s), so a client never reuses a
        # pooled connection the server is closing at that moment (a ReadError under load).
        timeout_keep_alive=75,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )


def _announce(settings: Settings, base: str, generated: bool) -> None:
    """Where to point the client; with JSON logs, as a log line, so that every line is JSON."""
    token_file = settings.data_dir / "api-token"
    if settings.log_format == "json":
        extra = {"base_url": base, **({"token_file": str(token_file)} if generated else {})}
        logging.getLogger("overture").info("Overture is serving on %s", base, extra=extra)
        return
    console.print(f"Overture is serving on [bold]{base}[/bold]")
    console.print(f"  export REPLICATE_BASE_URL={base}")
    if generated:
        console.print(f"  export REPLICATE_API_TOKEN={settings.tokens[0]}")
        console.print(f"  (token generated and kept in {token_file})")
    # As Jupyter's link does, it signs a browser in; the token rides in the fragment, which a browser
    # never sends, so it reaches no request line or access log (docs/playground.md). One line, as it is.
    link = f"{base}/#token={settings.tokens[0]}" if generated else f"{base}/ (it asks for your token)"
    console.print(f"Open the playground: {link}", soft_wrap=True, highlight=False, markup=False)


def _pairs(values: list[str] | None, option: str, form: str = "FROM=TO") -> dict[str, str]:
    pairs = {}
    for item in split(values):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"expected {form}, got {item!r}", param_hint=option)
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
            raise typer.BadParameter(f'{key} must be a list of ranges, such as ["10.0.0.0/8"]', param_hint="--config")
        try:
            settings[key] = parse_networks(split(values) or configured)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=f"--{key.replace('_', '-').removesuffix('s')}") from None
    return settings


def _layered(
    given: Any,
    table: dict[str, Any],
    key: str,
    option: str = "",
    valid: Callable[[Any], bool] | None = None,
    expected: str = "",
) -> Any:
    """The option's value (or its env var's), else the config file's ``key``; None when neither
    gives one, which leaves the setting to its dataclass's default. A value ``valid`` refuses stops
    the server at start-up, naming the option or the config file that gave it."""
    value, hint = (given, option) if given is not None else (table.get(key), "--config")
    if value is not None and valid is not None and not valid(value):
        raise typer.BadParameter(f"{key} must be {expected}, not {value!r}", param_hint=hint)
    return value


def _positive_seconds(value: Any) -> bool:
    # Finite: a grace period is waited out, and an infinite wait cannot be.
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf


def _worker_settings(table: dict[str, Any], workers: str | None, cancel_grace: float | None) -> dict[str, Any]:
    """Where model pools run and how long a cancel is waited for: options first, then the config file."""
    return _given(
        workers=_layered(workers, table, "workers", "--workers", WORKERS.__contains__, " or ".join(WORKERS)),
        cancel_grace_seconds=_layered(
            cancel_grace, table, "cancel_grace", "--cancel-grace", _positive_seconds, "a number of seconds above 0"
        ),
    )


def _cluster_settings(
    table: dict[str, Any],
    ray: str | None,
    replicas: list[str] | None,
    gpus_per_worker: list[str] | None,
    ray_wait: float | None,
    max_attempts: int | None,
) -> dict[str, Any]:
    """Where pools run on a Ray cluster, and how often a lost prediction runs again: options
    first, then the config file. Values are checked here, so that a typo stops the server at start-up."""
    counts: dict[str, int | str] = {}
    for model, count in {**_table(table, "replicas"), **_pairs(replicas, "--replicas")}.items():
        if count != "auto" and not (isinstance(count, int | str) and str(count).isdigit() and int(count) >= 1):
            raise typer.BadParameter(
                f"{model}: expected a count of at least 1 or 'auto', got {count!r}", param_hint="--replicas"
            )
        counts[model] = "auto" if count == "auto" else int(count)
    gpus: dict[str, float] = {}
    for model, amount in {**_table(table, "gpus_per_worker"), **_pairs(gpus_per_worker, "--gpus-per-worker")}.items():
        # A bool is an int to Python: ``true`` must not quietly mean one GPU.
        number = isinstance(amount, int | float | str) and not isinstance(amount, bool)
        try:
            gpus[model] = float(amount) if number else -1.0
        except ValueError:
            gpus[model] = -1.0
        if not 0 <= gpus[model] < math.inf or (gpus[model] > 1 and not gpus[model].is_integer()):
            raise typer.BadParameter(
                f"{model}: expected a fraction of one GPU or a whole number of them, got {amount!r}",
                param_hint="--gpus-per-worker",
            )
    address = _layered(ray, table, "ray", "--ray", lambda v: isinstance(v, str) and bool(v), "an address")
    if address is not None:
        _check_ray_address(address, "--ray" if ray is not None else "--config")
    return _given(
        ray_address=address,
        replicas=counts,
        gpus_per_worker=gpus,
        ray_wait_seconds=_layered(
            ray_wait, table, "ray_wait", "--ray-wait", _positive_seconds, "a number of seconds above 0"
        ),
        max_attempts=_layered(
            max_attempts,
            table,
            "max_attempts",
            "--max-attempts",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "a whole number of at least 1",
        ),
    )


def _cost_settings(
    table: dict[str, Any], prices: Path | None, budget: float | None, period: str | None
) -> dict[str, Any]:
    """The price table and the budget on upstream predictions: options first, then the config file."""
    return _given(
        prices=price_table(table, prices),
        upstream_budget=_layered(
            budget,
            table,
            "upstream_budget",
            "--upstream-budget",
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf,
            "an amount of USD of 0 or more",
        ),
        upstream_budget_period=_layered(
            period,
            table,
            "upstream_budget_period",
            "--upstream-budget-period",
            PERIODS.__contains__,
            " or ".join(PERIODS),
        ),
    )


def _provider_settings(
    table: dict[str, Any],
    upstream: list[str] | None,
    upstream_token: list[str] | None,
    route: list[str] | None,
    burst_after: float | None,
    upstream_timeout: float | None,
) -> dict[str, Any]:
    """Upstreams and routes (docs/providers.md): options first, then the config file. Checked
    here, so that a typo or a route to an unknown upstream stops the server at start-up."""
    urls: dict[str, tuple[str, str]] = {}
    tokens: dict[str, tuple[str, str]] = {}
    for name, entry in _table(table, "upstreams").items():
        if not (isinstance(entry, dict) and isinstance(entry.get("url"), str)):
            raise typer.BadParameter(
                f'upstreams.{name} must be a table such as {{url = "https://api.replicate.com", token = "r8_..."}}',
                param_hint="--config",
            )
        urls[name] = (entry["url"], "--config")
        if isinstance(entry.get("token"), str):
            tokens[name] = (entry["token"], "--config")
    urls |= {name: (url, "--upstream") for name, url in _pairs(upstream, "--upstream", "NAME=URL").items()}
    tokens |= {name: (token, "--upstream-token") for name, token in _tokens(upstream_token).items()}
    for name in tokens.keys() - urls.keys():
        raise typer.BadParameter(
            f"{name}: no upstream of that name (--upstream NAME=URL)", param_hint="--upstream-token"
        )
    upstreams: dict[str, Upstream] = {}
    for name, (url, hint) in urls.items():
        token = tokens[name][0] if name in tokens else os.environ.get(_token_variable(name))
        try:
            upstreams[name] = parse_upstream(name, url, token)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=hint) from None
    given = {key: (value, "--config") for key, value in _table(table, "routes").items()}
    given |= {key: (value, "--route") for key, value in _pairs(route, "--route", "MODEL=ROUTE").items()}
    routes: dict[str, Route] = {}
    for key, (value, hint) in given.items():
        if "/" not in key.partition(":")[0]:
            raise typer.BadParameter(f"{key}: expected a model as owner/name[:version]", param_hint=hint)
        try:
            routes[key] = parse_route(str(value), upstreams)
        except ValueError as exc:
            raise typer.BadParameter(f"{key}: {exc}", param_hint=hint) from None
    seconds = "a number of seconds above 0"
    return _given(
        upstreams=upstreams,
        routes=routes,
        burst_after_seconds=_layered(burst_after, table, "burst_after", "--burst-after", _positive_seconds, seconds),
        upstream_timeout_seconds=_layered(
            upstream_timeout, table, "upstream_timeout", "--upstream-timeout", _positive_seconds, seconds
        ),
    )


def _tokens(values: list[str] | None) -> dict[str, str]:
    """``NAME=TOKEN`` pairs; the message for a malformed one never shows the token."""
    tokens = {}
    for item in split(values):
        name, sep, token = item.partition("=")
        if not sep or not name or not token:
            raise typer.BadParameter(f"expected NAME=TOKEN (for {name or '?'!r})", param_hint="--upstream-token")
        tokens[name] = token
    return tokens


def _token_variable(name: str) -> str:
    """``OVERTURE_UPSTREAM_TOKEN_<NAME>``: the name upper-cased, other characters as ``_``."""
    return "OVERTURE_UPSTREAM_TOKEN_" + "".join(c if c.isalnum() else "_" for c in name.upper())


def _table(table: dict[str, Any], key: str) -> dict[str, Any]:
    """The config file's ``[key]`` table; anything else there stops the server at start-up."""
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise typer.BadParameter(f'{key} must be a table, such as [{key}] "meta/musicgen" = 2', param_hint="--config")
    return value


def _check_ray_address(address: str, hint: str) -> None:
    """``auto``, ``local`` or the head's ``HOST:PORT``: said at start-up, not as Ray's traceback."""
    if address.startswith("ray://"):
        # Ray Client cannot carry streaming generator calls, which bring every actor's events back.
        raise typer.BadParameter(
            f"{address}: Ray Client (ray://) addresses are not supported, as Ray Client cannot stream the "
            "actors' events back. Run the server on a node of the cluster and use --ray HOST:PORT (the head's "
            "address, port 6379 by default) or --ray auto.",
            param_hint=hint,
        )
    host, sep, port = address.rpartition(":")
    if address not in ("auto", "local") and not (sep and host and port.isdigit()):
        raise typer.BadParameter(f"expected auto, local or the Ray head's HOST:PORT, got {address!r}", param_hint=hint)


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
    allowed = split(allow) or table.get("allowed_checkpoints")
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
    musicgen = MusicGenSettings(
        **_given(batch_memory_bytes=int(batch_memory * 2**30) if batch_memory is not None else None, batch_slots=slots)
    )
    return {MusicGenSettings: musicgen, RiffusionSettings: RiffusionSettings(seed_images=seed_dir)}


def _given(**values: Any) -> dict[str, Any]:
    """The values given, as a dataclass's keyword arguments: those left None keep its defaults."""
    return {key: value for key, value in values.items() if value is not None}
