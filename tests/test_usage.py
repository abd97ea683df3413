"""Usage and costs (docs/usage.md): ``GET /v1/usage``, ``overture usage`` and the budget on
upstream predictions.

Local predictions of the synth give real local rows. Upstream rows are written into the server's
database through the project's own Store before it starts, as a relaying server would record them:
a provider, the hardware it reported and its ``predict_time``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from harness import OTHER_TOKEN, SUBPROCESS_PYTHONPATH, TOKEN, Server
from overture.api.auth import owner_of
from overture.engine.usage import Budget, period_bounds
from overture.errors import OverBudget
from overture.prices import Prices, UsageGroup
from overture.status import Status
from overture.store.db import PredictionRow
from overture.store.store import Store, utcnow

pytestmark = pytest.mark.timeout(120)

OWNER = owner_of(TOKEN)
OTHER = owner_of(OTHER_TOKEN)
#: Replicate's published per-second prices, which the table holds by default.
A100, H100, T4 = 0.0014, 0.001525, 0.000225
#: The seed's price of a Riffusion prediction.
RIFFUSION = 0.02
#: The test's own price file: a colleague's Overture at a per-second rate, and one model repriced.
PRICES = """
[providers]
colleague = 0.001

[models]
"riffusion/riffusion" = 0.02
"""
BUDGET = 0.10
LONG_AGO = datetime(2020, 1, 15, 12, tzinfo=UTC)


@dataclass
class Row:
    owner: str
    provider: str
    hardware: str | None
    model: str
    predict_time: float | None
    status: str = Status.SUCCEEDED
    created_at: datetime | None = None


#: What the relaying server recorded. Costs: 10 s and 20 s on an A100, 5 s of Riffusion with no
#: hardware (its model price), 3 s at the colleague's rate, 8 s on a T4 (named as its display name),
#: a model nothing prices, a prediction canceled before it ran; another token's 100 s on an H100;
#: and one of this token's from long ago.
UPSTREAM = [
    Row(OWNER, "replicate", "gpu-a100-large", "meta/musicgen", 10.0),
    Row(OWNER, "replicate", "gpu-a100-large", "meta/musicgen", 20.0),
    Row(OWNER, "replicate", None, "riffusion/riffusion", 5.0),
    Row(OWNER, "colleague", None, "overture/synth", 3.0),
    Row(OWNER, "replicate", "NVIDIA T4 GPU", "stability-ai/stable-audio-open-1.0", 8.0),
    Row(OWNER, "replicate", None, "someone/unpriced", 4.0),
    Row(OWNER, "replicate", None, "meta/musicgen", None, Status.CANCELED),
    Row(OTHER, "replicate", "gpu-h100", "meta/musicgen", 100.0),
    Row(OWNER, "replicate", "gpu-a100-large", "meta/musicgen", 1000.0, created_at=LONG_AGO),
]
REPLICATE_COST = 30 * A100 + RIFFUSION + 8 * T4
COLLEAGUE_COST = 3 * 0.001


def record(store: Store, rows: list[Row]) -> None:
    for n, row in enumerate(rows):
        created = row.created_at or utcnow()
        store.add(
            PredictionRow(
                id=f"up{n}{os.urandom(6).hex()}",
                owner=row.owner,
                model=row.model,
                version="0" * 64,
                status=row.status,
                input={},
                created_at=created,
                completed_at=created if row.status != Status.PROCESSING else None,
                predict_time=row.predict_time,
                provider=row.provider,
                hardware=row.hardware,
            )
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("usage")
    prices = root / "prices.toml"
    prices.write_text(PRICES)
    srv = Server(root / "overture-data", "--prices", str(prices), "--upstream-budget", str(BUDGET))
    store = Store(srv.data_dir, srv.database_url)
    record(store, UPSTREAM)
    store.close()
    yield srv.start()
    srv.stop()


@pytest.fixture(scope="module")
def local_seconds(server: Server) -> float:
    """Two synth predictions of this token, run here: their predict_time, as the client saw it."""
    client = server.client()
    total = 0.0
    for seed in (1, 2):
        prediction = client.predictions.create(model="overture/synth", input={"duration": 1, "seed": seed})
        prediction.wait()
        assert prediction.status == "succeeded", prediction.error
        total += prediction.metrics["predict_time"]
    return total


def usage(server: Server, token: str = TOKEN, **params: str) -> httpx.Response:
    with server.http(token) as http:
        return http.get("/v1/usage", params=params)


def lines(body: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(line[key] for key in body["group_by"]): line for line in body["results"]}


def test_usage_per_model_and_provider_adds_up(server: Server, local_seconds: float) -> None:
    body = usage(server).json()
    assert body["owner"] == OWNER and body["currency"] == "USD" and body["group_by"] == ["model", "provider"]
    by = lines(body)
    musicgen = by[("meta/musicgen", "replicate")]
    # The canceled one counts as a prediction, not as time or cost; the one from 2020 is outside the month.
    assert (musicgen["predictions"], musicgen["predict_time"]) == (3, 30.0)
    assert musicgen["cost"] == pytest.approx(30 * A100)
    assert by[("riffusion/riffusion", "replicate")]["cost"] == pytest.approx(RIFFUSION)
    assert by[("stability-ai/stable-audio-open-1.0", "replicate")]["cost"] == pytest.approx(8 * T4)
    assert by[("overture/synth", "colleague")]["cost"] == pytest.approx(COLLEAGUE_COST)
    unpriced = by[("someone/unpriced", "replicate")]
    assert (unpriced["cost"], unpriced["unpriced"]) == (0, 1)
    local = by[("overture/synth", "local")]
    assert (local["predictions"], local["cost"]) == (2, 0)
    assert local["predict_time"] == pytest.approx(local_seconds, abs=0.002)

    total = body["total"]
    assert total["predictions"] == sum(line["predictions"] for line in body["results"]) == 9
    assert total["predict_time"] == pytest.approx(30 + 5 + 3 + 8 + 4 + local_seconds, abs=0.005)
    assert total["cost"] == pytest.approx(REPLICATE_COST + COLLEAGUE_COST)
    assert total["unpriced"] == 1
    # Costliest first.
    assert [line["cost"] for line in body["results"]] == sorted(
        (line["cost"] for line in body["results"]), reverse=True
    )


def test_usage_per_provider_and_per_hardware(server: Server, local_seconds: float) -> None:
    by_provider = lines(usage(server, group_by="provider").json())
    assert set(by_provider) == {("replicate",), ("colleague",), ("local",)}
    assert by_provider[("replicate",)]["cost"] == pytest.approx(REPLICATE_COST)
    assert by_provider[("replicate",)]["predict_time"] == 47.0
    assert by_provider[("local",)]["predictions"] == 2

    by_hardware = lines(usage(server, group_by=["hardware", "provider"]).json())
    assert by_hardware[("gpu-a100-large", "replicate")]["predict_time"] == 30.0
    assert by_hardware[("NVIDIA T4 GPU", "replicate")]["cost"] == pytest.approx(8 * T4)

    everything = usage(server, group_by="").json()
    assert everything["group_by"] == [] and len(everything["results"]) == 1
    assert everything["results"][0]["cost"] == everything["total"]["cost"]


def test_a_token_sees_only_its_own_usage(server: Server, local_seconds: float) -> None:
    mine = usage(server, group_by="owner").json()
    assert [line["owner"] for line in mine["results"]] == [OWNER]
    theirs = usage(server, OTHER_TOKEN, group_by="owner,model").json()
    assert theirs["owner"] == OTHER
    assert [(line["owner"], line["model"]) for line in theirs["results"]] == [(OTHER, "meta/musicgen")]
    assert theirs["total"]["cost"] == pytest.approx(100 * H100)
    with server.http(None) as anonymous:
        assert anonymous.get("/v1/usage").status_code == 401


def test_the_period_bounds_what_is_counted(server: Server, local_seconds: float) -> None:
    body = usage(server, since="2020-01-01", until="2020-02-01", group_by="model").json()
    assert (body["since"], body["until"]) == ("2020-01-01T00:00:00.000Z", "2020-02-01T00:00:00.000Z")
    assert [(line["model"], line["predict_time"]) for line in body["results"]] == [("meta/musicgen", 1000.0)]
    assert body["total"]["cost"] == pytest.approx(1000 * A100)
    # An offset is honoured: 12:00+02:00 is 10:00 UTC, so the row made at 12:00 UTC is not before it.
    after = usage(server, since="2020-01-15T12:00:00+02:00", until="2020-01-15T13:00:00Z").json()
    assert after["since"] == "2020-01-15T10:00:00.000Z" and after["total"]["predictions"] == 1
    # ``until`` is not included.
    assert usage(server, since="2020-01-01", until="2020-01-15T12:00:00").json()["total"]["predictions"] == 0
    # Since 2020, everything of this token.
    assert usage(server, since="2020-01-01").json()["total"]["predictions"] == 10

    # By default, the budget period: this calendar month (UTC) until now.
    default = usage(server).json()
    start, _ = period_bounds("month", datetime.now(UTC))
    assert default["since"] == start.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert datetime.fromisoformat(default["until"]) > datetime.now(UTC) - timedelta(minutes=1)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-12-01", "until": "2026-11-01"}, "until"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "since"),
        ({"group_by": "model,colour"}, "group_by"),
    ],
)
def test_bad_parameters_are_a_422_naming_the_field(server: Server, params: dict[str, str], field: str) -> None:
    response = usage(server, **params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [f["field"] for f in response.json()["invalid_fields"]] == [field]


def test_usage_shows_the_tokens_budget(server: Server, local_seconds: float) -> None:
    _, renews = period_bounds("month", datetime.now(UTC))
    mine = usage(server).json()["budget"]
    assert mine["limit"] == BUDGET and mine["period"] == "month"
    assert mine["resets_at"] == renews.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    # Upstream predictions only: the local synth runs cost nothing anyway, and are not counted.
    assert mine["spent"] == pytest.approx(REPLICATE_COST + COLLEAGUE_COST)
    assert usage(server, OTHER_TOKEN).json()["budget"]["spent"] == pytest.approx(100 * H100)


def test_the_openapi_document_says_usage_and_402_are_overture_extensions(server: Server) -> None:
    spec = httpx.get(f"{server.base_url}/openapi.json").json()
    route = spec["paths"]["/v1/usage"]["get"]
    assert "Overture extension" in route["description"]
    assert route["security"] == [{"bearer": []}] and "422" in route["responses"]
    assert {p["name"] for p in route["parameters"]} == {"since", "until", "group_by"}
    assert "UsageLine" in spec["components"]["schemas"]
    assert "402" in spec["paths"]["/v1/models/{model_owner}/{model_name}/predictions"]["post"]["responses"]
    assert "402" not in spec["paths"]["/v1/files"]["post"]["responses"]


# -- the command ----------------------------------------------------------------------------------


def overture(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "OVERTURE_"))}
    base_env.update(PYTHONPATH=SUBPROCESS_PYTHONPATH, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "overture", *args], capture_output=True, text=True, env={**base_env, **(env or {})}
    )


def test_the_command_shows_the_servers_answer_for_the_token(server: Server, local_seconds: float) -> None:
    env = {"REPLICATE_BASE_URL": server.base_url, "REPLICATE_API_TOKEN": TOKEN}
    result = overture("usage", "--json", "--by", "model,provider", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert lines(shown) == lines(usage(server, group_by="model,provider").json())

    table = overture("usage", env=env)
    assert table.returncode == 0, table.stderr
    assert "meta/musicgen" in table.stdout and "colleague" in table.stdout and OTHER not in table.stdout
    assert f"{REPLICATE_COST + COLLEAGUE_COST:.4f}" in table.stdout  # the total
    assert "Budget for upstream predictions" in table.stdout

    bad = overture("usage", "--since", "last week", env=env)
    assert bad.returncode == 1 and "since" in bad.stderr


def test_the_operator_sees_every_tokens_usage_from_the_database(server: Server, local_seconds: float) -> None:
    prices = server.data_dir.parent / "prices.toml"
    where = ["--data-dir", str(server.data_dir), "--database-url", server.database_url, "--prices", str(prices)]
    # --local: the database, even with a server in the environment.
    env = {"REPLICATE_BASE_URL": server.base_url, "REPLICATE_API_TOKEN": TOKEN}
    result = overture("usage", "--local", "--json", "--by", "owner,provider", *where, env=env)
    assert result.returncode == 0, result.stderr
    by = lines(json.loads(result.stdout))
    assert by[(OWNER, "replicate")]["cost"] == pytest.approx(REPLICATE_COST)
    assert by[(OWNER, "colleague")]["cost"] == pytest.approx(COLLEAGUE_COST)
    assert by[(OTHER, "replicate")]["cost"] == pytest.approx(100 * H100)
    assert by[(OWNER, "local")]["predictions"] == 2

    table = overture("usage", "--local", "--since", "2020-01-01", *where)
    assert table.returncode == 0, table.stderr
    assert OWNER in table.stdout and OTHER in table.stdout

    # Without the price file, the colleague's runs are priced by nothing.
    unpriced = overture("usage", "--local", "--json", "--by", "provider", *where[:4])
    assert lines(json.loads(unpriced.stdout))[("colleague",)]["unpriced"] == 1

    missing = overture("usage", "--local", "--data-dir", str(server.data_dir.parent / "nowhere"))
    assert missing.returncode == 2 and "no database" in missing.stderr


@pytest.mark.parametrize(
    ("options", "prices", "config", "words"),
    [
        (["--upstream-budget", "-1"], "", "", "--upstream-budget: upstream_budget must be an amount of USD of 0"),
        ([], "", "upstream_budget = -1\n", "--config: upstream_budget must be an amount of USD of 0 or more"),
        (["--upstream-budget-period", "year"], "", "", "upstream_budget_period must be day or week or month"),
        ([], "[hardware]\ngpu-t4 = -0.1\n", "", "--prices: "),
        ([], "[gpus]\n", "", "unknown price section 'gpus'"),
        ([], "", '[prices.models]\n"meta/musicgen" = "cheap"\n', "--config: [prices]: models.meta/musicgen must be"),
    ],
)
def test_a_bad_price_table_or_budget_stops_the_server(
    tmp_path: Path, options: list[str], prices: str, config: str, words: str
) -> None:
    (tmp_path / "prices.toml").write_text(prices)
    (tmp_path / "overture.toml").write_text(config)
    files = ["--prices", str(tmp_path / "prices.toml")] if prices else []
    result = overture(
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--config",
        str(tmp_path / "overture.toml"),
        *files,
        *options,
        env={"COLUMNS": "1000"},
    )
    assert result.returncode == 2 and words in result.stderr, result.stderr


# -- the budget, against a real store -----------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Store]:
    s = Store(tmp_path / "overture-data", database_url)
    yield s
    s.close()


def test_the_budget_admits_until_the_cap_is_reached(store: Store) -> None:
    now = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
    budget = Budget(store, Prices(), limit=0.05, period="month", clock=lambda: now)
    budget.admit(OWNER)  # nothing spent yet
    record(store, [Row(OWNER, "replicate", "gpu-a100-large", "meta/musicgen", 30.0, created_at=now)])
    budget.admit(OWNER)  # 0.042 of 0.05
    # Local runs, last month's and another token's spending do not count.
    record(
        store,
        [
            Row(OWNER, "local", "cpu", "meta/musicgen", 1000.0, created_at=now),
            Row(
                OWNER,
                "replicate",
                "gpu-a100-large",
                "meta/musicgen",
                1000.0,
                created_at=datetime(2026, 11, 30, tzinfo=UTC),
            ),
            Row(OTHER, "replicate", "gpu-a100-large", "meta/musicgen", 1000.0, created_at=now),
        ],
    )
    budget.admit(OWNER)
    record(store, [Row(OWNER, "replicate", "gpu-a100-large", "meta/musicgen", 10.0, created_at=now)])
    with pytest.raises(OverBudget) as refused:
        budget.admit(OWNER)  # 0.056
    assert refused.value.spent == pytest.approx(40 * A100)
    assert refused.value.resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert "$0.0560 of its $0.05 budget" in str(refused.value) and "2027-01-01 00:00 UTC" in str(refused.value)
    # Next month the token starts afresh.
    Budget(store, Prices(), limit=0.05, clock=lambda: datetime(2027, 1, 1, tzinfo=UTC)).admit(OWNER)
    # No cap: never refused, and the store is not even asked.
    Budget(store, Prices(), limit=None, clock=lambda: now).admit(OWNER)


def test_predictions_in_flight_count_at_their_models_price(store: Store) -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    budget = Budget(store, Prices(), limit=0.25, period="day", clock=lambda: now)
    running = [Row(OWNER, "replicate", None, "meta/musicgen", None, Status.PROCESSING, now) for _ in range(2)]
    record(store, running)
    budget.admit(OWNER)  # 2 x 0.10 reserved
    assert budget.spent(OWNER) == (pytest.approx(0.20), datetime(2026, 12, 8, tzinfo=UTC))
    record(store, [Row(OWNER, "replicate", None, "riffusion/riffusion", None, Status.STARTING, now)] * 3)
    with pytest.raises(OverBudget):
        budget.admit(OWNER)  # 0.26


def test_predictions_in_flight_on_a_rated_provider_count_at_the_models_average_run(store: Store) -> None:
    """Priced at 1 USD a second, two finished runs of 2 s and 4 s make each one in flight count 3 s;
    a model with no finished run there counts at its price per prediction, one without at nothing."""
    now = datetime(2026, 12, 7, tzinfo=UTC)
    budget = Budget(store, Prices(providers={"a": 1.0}), limit=100.0, period="day", clock=lambda: now)
    finished = [Row(OWNER, "a", "gpu", "x/y", seconds, Status.SUCCEEDED, now) for seconds in (2.0, 4.0)]
    running = [Row(OWNER, "a", None, "x/y", None, Status.PROCESSING, now) for _ in range(3)]
    first_runs = [Row(OWNER, "a", None, model, None, Status.STARTING, now) for model in ("meta/musicgen", "n/o")]
    record(store, finished + running + first_runs)
    assert budget.spent(OWNER)[0] == pytest.approx(6.0 + 3 * 3.0 + 0.10)


def test_over_budget_is_a_402_problem(tmp_path: Path) -> None:
    """The API's answer to ``OverBudget`` from wherever a create meets it (the routing decision)."""
    from overture.api.app import create_app
    from overture.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", tokens=[TOKEN], upstream_budget=0.0, workers="inline"))
    budget = app.state.services.engine.budget
    app.add_api_route("/budget-check", lambda: budget.admit(OWNER))
    with TestClient(app) as http:
        response = http.get("/budget-check")
    assert response.status_code == 402
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Payment required" and "--upstream-budget" in body["detail"]
    assert (body["budget"], body["spent"], body["period"]) == (0.0, 0.0, "month")
    assert body["resets_at"] == period_bounds("month", datetime.now(UTC))[1].strftime("%Y-%m-%dT%H:%M:%SZ")


NEW_YEAR = datetime(2027, 1, 1)


@pytest.mark.parametrize(
    ("period", "now", "bounds"),
    [
        ("day", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), (datetime(2026, 12, 31), datetime(2027, 1, 1))),
        ("week", datetime(2026, 12, 31, 8, tzinfo=UTC), (datetime(2026, 12, 28), datetime(2027, 1, 4))),
        ("month", datetime(2026, 12, 31, 8, tzinfo=UTC), (datetime(2026, 12, 1), datetime(2027, 1, 1))),
        ("month", datetime(2027, 2, 28, 8, tzinfo=UTC), (datetime(2027, 2, 1), datetime(2027, 3, 1))),
        # In UTC, whatever the offset of the moment given: 01:00+03:00 is still the 31st in UTC.
        (
            "day",
            datetime(2027, 1, 1, 1, tzinfo=timezone(timedelta(hours=3))),
            (datetime(2026, 12, 31), datetime(2027, 1, 1)),
        ),
    ],
)
def test_periods_are_calendar_ones_in_utc(period: Any, now: datetime, bounds: tuple[datetime, datetime]) -> None:
    assert period_bounds(period, now) == tuple(b.replace(tzinfo=UTC) for b in bounds)


def test_the_price_table_prices_by_provider_then_hardware_then_model() -> None:
    prices = Prices().layered({"providers": {"replicate": 0.001}, "hardware": {"My GPU": 0.5}}, "test")
    group = dict(owner=OWNER, predictions=1, ran=1, predict_time=10.0, active=0)
    assert prices.cost(UsageGroup(provider="replicate", hardware="gpu-h100", model="meta/musicgen", **group)) == (
        pytest.approx(0.01),
        0,
    )
    assert prices.cost(UsageGroup(provider="other", hardware="my gpu", model="meta/musicgen", **group)) == (5.0, 0)
    assert prices.cost(UsageGroup(provider="other", hardware="unknown", model="meta/musicgen", **group)) == (0.10, 0)
    assert prices.cost(UsageGroup(provider="other", hardware=None, model="a/b", **group)) == (0.0, 1)
    assert prices.cost(UsageGroup(provider="local", hardware="gpu-h100", model="meta/musicgen", **group)) == (0.0, 0)
