"""``overture pull``, ``overture prune`` and ``overture models --local``: model weights in the
Hugging Face cache (``HF_HOME``), by the models that load them."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from overture.cli.common import console, split
from overture.errors import UnknownModel
from overture.models.base import Predictor
from overture.models.musicgen.settings import MusicGenSettings
from overture.models.registry import Registry, default_registry
from overture.models.weights import declared, variants
from overture.runtime.checkpoints import Checkpoints
from overture.runtime.weights import HubWeights, PullFailed, on_disk, prune_plan
from overture.runtime.weights import pull as pull_weights


def pull(
    ref: Annotated[str, typer.Argument(help="MODEL[:VERSION], e.g. meta/musicgen")],
    model_version: Annotated[
        list[str] | None, typer.Option("--model-version", help="A variant to pull (repeatable); see models --local.")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Pull every variant of the model.")] = False,
    prepare: Annotated[
        bool,
        typer.Option(
            "--prepare/--no-prepare",
            help="After the download, do what the first load would do once per machine (MusicGen: measure "
            "its CPU kernels into the kernel cache). Run it with the server's thread count and --batch-slots.",
        ),
    ] = True,
    batch_slots: Annotated[
        int,
        typer.Option(envvar="OVERTURE_BATCH_SLOTS", min=1, help="The server's --batch-slots, part of MusicGen's key."),
    ] = MusicGenSettings.batch_slots,
) -> None:
    """Download exactly the files a model loads from the Hugging Face hub into HF_HOME; run it
    again to resume. Gated models need HF_TOKEN."""
    chosen = _chosen(_registry(), ref, split(model_version), every)
    for name, (weights, predictor) in chosen.items():
        console.print(f"Pulling {weights.repo} ({name}) at {weights.revision}")
        try:
            snapshot = pull_weights(weights, say=console.print)
        except PullFailed as exc:
            console.print(str(exc), style="red")
            raise typer.Exit(1) from None
        state = on_disk(weights)
        console.print(f"{name}: ready in {snapshot} ({_size(state.size_bytes)})", style="green")
        if prepare:
            done = predictor.prepare_machine(
                Checkpoints(), name, {MusicGenSettings: MusicGenSettings(batch_slots=batch_slots)}
            )
            if done:
                console.print(f"{name}: {done.splitlines()[0]}")


def _chosen(
    registry: Registry, ref: str, names: list[str], every: bool
) -> dict[str, tuple[HubWeights, type[Predictor]]]:
    """The variants to pull, each with the predictor that loads it."""
    try:
        model, version = registry.version(ref) if ":" in ref else (registry.model(ref), None)
    except UnknownModel as exc:
        console.print(str(exc), style="red")
        raise typer.Exit(2) from None
    offered = variants(model, version)
    loaders = {
        name: each.predictor for each in ([version] if version else model.versions) for name in each.predictor.weights
    }
    if not offered:
        console.print(f"{ref} loads no weights: there is nothing to pull.")
        raise typer.Exit(0)
    unknown = [name for name in names if name not in offered]
    if unknown:
        console.print(f"{ref} has no model_version {', '.join(unknown)}; it has: {', '.join(offered)}", style="red")
        raise typer.Exit(2)
    if every or len(offered) == 1:
        names = list(offered)
    elif not names:
        console.print(f"{ref} has several variants: choose with --model-version (or --all): {', '.join(offered)}")
        raise typer.Exit(2)
    return {name: (offered[name], loaders[name]) for name in names}


def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
    unknown: Annotated[bool, typer.Option("--unknown", help="Also remove repos that no Overture model loads.")] = False,
) -> None:
    """Remove from the Hugging Face cache what no model variant loads: other revisions, other files
    (e.g. .bin copies of safetensors weights) and abandoned partial downloads."""
    plan = prune_plan(declared(_registry()), include_unknown=unknown)
    for removal in plan.removals:
        size = f" ({_size(removal.bytes)})" if removal.bytes else ""
        typer.echo(f"{'would remove' if dry_run else 'removing'} {removal.path}{size}: {removal.why}")
    if plan.unknown and not unknown:
        typer.echo(f"left alone, no model loads them (--unknown removes them): {', '.join(plan.unknown)}")
    if not dry_run:
        plan.apply()
    verb = "would free" if dry_run else "freed"
    typer.echo(f"{len(plan.removals)} entries, {verb} {_size(plan.total_bytes)}")


def local_table() -> None:
    """Each model's variants: weights present in the HF cache, size on disk, and memory to load."""
    table = Table("model", "model_version", "repo", "ready", "on disk", "parameters", "memory fp32 / 16-bit")
    for model in _registry().models.values():
        for name, weights in variants(model).items():
            state = on_disk(weights)
            # Counted from the files when they are here; else the published figure, marked "~".
            parameters, mark = (state.parameters, "") if state.parameters is not None else (weights.parameters, "~")
            table.add_row(
                model.ref,
                name,
                f"{weights.repo}@{weights.revision}",
                "yes" if state.ready else "no",
                _size(state.size_bytes) if state.ready else "-",
                f"{mark}{parameters / 1e6:.1f} M" if parameters is not None else "-",
                f"{mark}{_size(parameters * 4)} / {mark}{_size(parameters * 2)}" if parameters is not None else "-",
            )
    # Piped, the table keeps its columns whole instead of 80 characters wide.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _registry() -> Registry:
    """The built-in models and those of ``OVERTURE_MODEL_MODULES``, as the server would load them."""
    return default_registry(split([os.environ.get("OVERTURE_MODEL_MODULES", "")]))


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
