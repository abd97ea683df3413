"""``overture usage``: predictions' time and estimated cost over a period (docs/usage.md).

Against a server (``REPLICATE_BASE_URL``) it shows what ``GET /v1/usage`` gives the token: its own
usage. With ``--local``, or without a server, it reads the data directory's database, as the
operator does to see every token's."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from overture.api.present import timestamp
from overture.cli.client import _check, _client, _server
from overture.cli.common import split
from overture.config import Settings
from overture.engine.usage import GROUP_FIELDS, UsageReport, parse_moment, period_bounds
from overture.prices import PERIODS, Prices
from overture.store.store import Store, default_database_url, utcnow

#: The operator wants per-token figures; a token's own report has one owner, which costs a column.
_DEFAULT_BY = "owner,model,provider"


def price_table(config: dict[str, Any], prices_file: Path | None) -> Prices:
    """The built-in prices, under the config file's ``[prices]`` table, under ``--prices FILE``;
    a table that is not one stops the command, naming where it came from."""
    prices = Prices()
    try:
        section = config.get("prices", {})
        if not isinstance(section, dict):
            raise ValueError('prices must be a table, such as [prices.models] "meta/musicgen" = 0.10')
        prices = prices.layered(section, "[prices]")
        if prices_file is not None:
            prices = prices.layered(tomllib.loads(prices_file.read_text()), str(prices_file))
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--prices" if prices_file else "--config") from None
    return prices


def usage(
    since: Annotated[
        str | None, typer.Option(help="ISO-8601 date or date-time (UTC); default: the start of the budget period.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="ISO-8601, not included; default: now.")] = None,
    by: Annotated[str, typer.Option(help=f"Group by any of {', '.join(GROUP_FIELDS)}, comma-separated.")] = _DEFAULT_BY,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as /v1/usage's JSON.")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Read the data directory's database (every token) even with a server set.")
    ] = False,
    data_dir: Annotated[Path, typer.Option(envvar="OVERTURE_DATA_DIR", help="With --local.")] = Settings.data_dir,
    database_url: Annotated[str | None, typer.Option(envvar="OVERTURE_DATABASE_URL", help="With --local.")] = None,
    config: Annotated[
        Path | None, typer.Option(envvar="OVERTURE_CONFIG", help="With --local: the server's config file, for prices.")
    ] = None,
    prices: Annotated[
        Path | None, typer.Option(envvar="OVERTURE_PRICES", metavar="FILE", help="With --local: the server's --prices.")
    ] = None,
) -> None:
    """Time and estimated cost of predictions, per model, token and provider: the server's answer for
    your token when REPLICATE_BASE_URL is set, else every token's from the data directory."""
    groups = split([by])
    if _server() is not None and not local:
        params: dict[str, Any] = {"group_by": ",".join(groups)}
        params.update({k: v for k, v in (("since", since), ("until", until)) if v is not None})
        with _client() as client:
            report = _check(client.get("/v1/usage", params=params))
    else:
        report = _local_report(since, until, groups, data_dir, database_url, config, prices)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print(report)


def _local_report(
    since: str | None,
    until: str | None,
    groups: list[str],
    data_dir: Path,
    database_url: str | None,
    config: Path | None,
    prices_file: Path | None,
) -> dict[str, Any]:
    unknown = [name for name in groups if name not in GROUP_FIELDS]
    if unknown:
        raise typer.BadParameter(f"{unknown[0]!r} is not one of {', '.join(GROUP_FIELDS)}", param_hint="--by")
    try:
        table = tomllib.loads(config.read_text()) if config else {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(f"{config}: {exc}", param_hint="--config") from None
    period = table.get("upstream_budget_period", Settings.upstream_budget_period)
    if period not in PERIODS:
        raise typer.BadParameter(f"upstream_budget_period must be {' or '.join(PERIODS)}", param_hint="--config")
    now = utcnow()
    start = _moment(since, "--since") or period_bounds(period, now)[0]
    end = _moment(until, "--until") or now
    if not database_url and not (data_dir / "overture.db").exists():
        raise typer.BadParameter(f"no database in {data_dir}", param_hint="--data-dir")
    store = Store(data_dir, database_url or default_database_url(data_dir))
    try:
        found = store.usage(start, end)
    finally:
        store.close()
    return UsageReport.of(found, price_table(table, prices_file), start, end, groups).as_json(timestamp)


def _moment(value: str | None, option: str) -> Any:
    try:
        return None if value is None else parse_moment(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _print(report: dict[str, Any]) -> None:
    keys = report["group_by"]
    table = Table(
        *(keys or ["all"]),
        "predictions",
        "predict time (s)",
        f"cost ({report['currency']})",
        "unpriced",
        title=f"Usage from {report['since']} to {report['until']}",
    )
    total = {**report["total"], **dict.fromkeys(keys, ""), (keys or ["all"])[0]: "total"}
    for line in [*report["results"], total]:
        table.add_row(
            *(str(line[key]) if line.get(key) is not None else "-" for key in keys or ["all"]),
            str(line["predictions"]),
            f"{line['predict_time']:.1f}",
            f"{line['cost']:.4f}",
            str(line["unpriced"]),
            end_section=line is not total and line is report["results"][-1],
        )
    console = Console()
    console.print(table)
    budget = report.get("budget")
    if budget:
        console.print(
            f"Budget for upstream predictions: {budget['spent']:.4f} of {budget['limit']:.2f} "
            f"{report['currency']} spent this {budget['period']}; it renews at {budget['resets_at']}."
        )
