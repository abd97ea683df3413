"""``overture run`` without a server: the prediction runs in this process, through the server's
own wiring (``build_services``), so that it meets the same engine, store and checks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import typer

from overture.cli.common import console, split, watch
from overture.config import Settings
from overture.errors import InvalidInput, UnknownModel
from overture.outputs import FILE_REF, file_refs


def run_local(ref: str, values: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """The finished prediction and its first output file's bytes, on a throwaway data directory."""
    # The server's modules load only for a local run, not for every command.
    from overture.api.app import build_services

    with tempfile.TemporaryDirectory(prefix="overture-run-") as tmp:
        modules = split([os.environ.get("OVERTURE_MODEL_MODULES", "")])
        engine = build_services(Settings(data_dir=Path(tmp), cache=False, model_modules=modules)).engine
        store = engine.store
        engine.start()
        try:
            try:
                model, version = engine.registry.version(ref)
                row = engine.create("local", model, version, values)
            except (UnknownModel, InvalidInput) as exc:
                console.print(str(exc), style="red")
                raise typer.Exit(2) from None
            final = watch(lambda: _view(store.prediction(row.id)))
            ref_value = next((ref[FILE_REF] for ref in file_refs(final["output"])), None)
            data = store.output_path(ref_value).read_bytes() if ref_value else None
        finally:
            engine.stop()
            store.close()
    return final, data


def _view(row: Any) -> dict[str, Any]:
    """The fields of a stored prediction that ``watch`` and ``run`` read, as the API names them."""
    return {"status": row.status, "logs": row.logs, "error": row.error, "output": row.output}
