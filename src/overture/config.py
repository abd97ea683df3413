"""Server settings; each has a command-line option and an ``OVERTURE_*`` environment variable."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal, get_args

from overture.logs import LogFormat
from overture.prices import Period, Prices
from overture.runtime.checkpoints import CheckpointSettings
from overture.upstreams import Route, Upstream

#: Where model pools run: child worker processes, or threads in the server process (for debugging).
Workers = Literal["process", "inline"]
WORKERS: tuple[str, ...] = get_args(Workers)

#: The rate limits' window, in seconds: up to a day. Throttled requests are told when to come back
#: in whole seconds, and an endless window never lets a throttled token in again.
RATE_LIMIT_WINDOW_RANGE = (0.001, 86400.0)


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./overture-data")
    #: Base of every absolute URL the server emits; derived from the request when unset.
    public_url: str | None = None
    #: Accepted API tokens; when empty, one is generated and kept in the data directory.
    tokens: list[str] = field(default_factory=list)
    database_url: str | None = None
    #: Remove inputs, outputs and logs of predictions this many hours after they finish.
    retention_hours: float | None = None
    cache: bool = True
    max_upload_bytes: int = 100 * 1024 * 1024
    #: Largest file input fetched from a URL or decoded from a data: URI.
    max_input_file_bytes: int = 100 * 1024 * 1024
    #: Longest time a file input may take to download.
    input_download_seconds: float = 300.0
    signed_url_ttl_seconds: int = 3600
    #: Results per page of every list route (Replicate uses 100).
    page_size: int = 100
    #: File inputs may come from private and loopback addresses (fine for a self-hosted server).
    input_allow_private: bool = True
    #: Ranges over the built-in address rules (engine/netpolicy.py); the longest match wins.
    input_allow_cidrs: tuple[IPv4Network | IPv6Network, ...] = ()
    input_deny_cidrs: tuple[IPv4Network | IPv6Network, ...] = ()
    #: Webhooks may target private and loopback addresses (fine for a self-hosted server).
    webhook_allow_private: bool = True
    webhook_allow_cidrs: tuple[IPv4Network | IPv6Network, ...] = ()
    webhook_deny_cidrs: tuple[IPv4Network | IPv6Network, ...] = ()
    webhook_retry_hours: float = 1.0
    #: First webhook retry delay in seconds; doubles with each attempt.
    webhook_backoff_seconds: float = 1.0
    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)
    #: Each model package's own settings (e.g. ``MusicGenSettings``) by their dataclass; absent ones
    #: take their defaults. Predictors receive the mapping and read theirs (``Predictor.own_settings``).
    model_settings: dict[type, Any] = field(default_factory=dict)
    #: Fail predictions still unfinished this long after creation (a ``Cancel-After`` header overrides).
    prediction_timeout_seconds: float | None = None
    #: Largest request body outside file uploads (JSON, with any data: URIs in it).
    max_request_bytes: int = 32 * 1024 * 1024
    #: Importable modules whose ``MODELS`` list is served beside the built-in models.
    model_modules: list[str] = field(default_factory=list)
    #: Where model pools run (``WORKERS``): "process", child worker processes; "inline", threads
    #: in the server process, for debugging.
    workers: Workers = "process"
    #: How long a running prediction may ignore a cancel before its worker process is killed and
    #: restarted.
    cancel_grace_seconds: float = 10.0
    #: Per token, in any ``rate_limit_window_seconds``: prediction creates, and all other requests
    #: (Replicate's published limits); 0 turns a limit off.
    rate_limit_creates: int = 600
    rate_limit_requests: int = 3000
    rate_limit_window_seconds: float = 60.0
    #: Predictions one token may have waiting to start; 0 for no cap.
    max_queued_per_token: int = 0
    #: How many times a prediction runs when its worker is lost while running it, before it produced
    #: output (any transport): 2 runs it again once. A job lost while still queued is sent again for free.
    max_attempts: int = 2
    # -- Ray (docs/cluster.md) ---------------------------------------------------------------------
    #: Run model pools as actors on this Ray cluster: "auto" or the head's "HOST:PORT" (the server
    #: runs on a node of the cluster; Ray Client's ray:// cannot stream), or "local" to start one on
    #: this machine. None: no Ray (the default), nor is it imported.
    ray_address: str | None = None
    #: Actors per pool by pool name: a count, or "auto" (one per GPU of the cluster; one per node
    #: on a cluster without GPUs). Pools not named get one.
    replicas: dict[str, int | Literal["auto"]] = field(default_factory=dict)
    #: GPUs each actor of a pool reserves by pool name, fractions allowed; pools not named take one
    #: whole GPU on a cluster with GPUs, none without, and CPU-only models none.
    gpus_per_worker: dict[str, float] = field(default_factory=dict)
    #: How long predictions wait for a Ray cluster that does not answer before they fail.
    ray_wait_seconds: float = 60.0
    # -- costs of upstream predictions (docs/usage.md) -------------------------------------------
    #: The price table that turns predict_time into an estimated cost (overture/prices.py).
    prices: Prices = field(default_factory=Prices)
    #: Each token's cap, in USD, on the estimated cost of its upstream predictions per
    #: ``upstream_budget_period``; None: no cap.
    upstream_budget: float | None = None
    #: "day", "week" (from Monday) or "month", in UTC.
    upstream_budget_period: Period = "month"
    # -- providers: upstream Replicate APIs (docs/providers.md) -----------------------------------
    #: Other Replicate APIs (api.replicate.com, another Overture) predictions can be relayed to, by name.
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    #: Where each model (``owner/name``) or version (``owner/name:id``) runs; unnamed ones run locally.
    routes: dict[str, Route] = field(default_factory=dict)
    #: With a ``burst:NAME`` route, a prediction that would wait longer than this locally goes upstream.
    burst_after_seconds: float = 30.0
    #: How long an upstream may stay unreachable (or keep answering 5xx) before its prediction fails.
    upstream_timeout_seconds: float = 60.0
    # -- for operators: metrics and logs (docs/operations.md) --
    #: Serve ``GET /metrics`` and count what it shows; off, nothing is counted.
    metrics: bool = True
    #: A token that ``GET /metrics`` accepts besides the API tokens, for a scraper that should not
    #: be able to run predictions.
    metrics_token: str | None = None
    #: "text" (uvicorn's lines) or "json" (one object per line, with ``prediction_id``).
    log_format: LogFormat = "text"
    #: Log every HTTP request (uvicorn's access log).
    access_log: bool = False

    def __post_init__(self) -> None:
        low, high = RATE_LIMIT_WINDOW_RANGE
        if not low <= self.rate_limit_window_seconds <= high:  # NaN too: it is within no range
            raise ValueError(
                f"rate_limit_window_seconds must be {low:g} to {high:g} seconds, not {self.rate_limit_window_seconds!r}"
            )
