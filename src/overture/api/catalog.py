"""Model and version routes: what the server offers, with each version's OpenAPI schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from overture.api.auth import Owner
from overture.api.deps import Present, Svc
from overture.api.errors import ApiError
from overture.errors import UnknownModel
from overture.models.base import Model
from overture.models.weights import readiness

router = APIRouter(prefix="/v1")


def _model(svc: Svc, owner: str, name: str) -> Model:
    try:
        return svc.engine.registry.model(f"{owner}/{name}")
    except UnknownModel as exc:
        raise ApiError(404, str(exc)) from None


@router.get("/models")
def list_models(_: Owner, svc: Svc, present: Present) -> dict[str, Any]:
    models = svc.engine.registry.models.values()
    return present.page([present.model(m, svc.engine.store.run_count(m.ref)) for m in models], None)


@router.get("/models/{model_owner}/{model_name}")
def get_model(model_owner: str, model_name: str, _: Owner, svc: Svc, present: Present) -> dict[str, Any]:
    model = _model(svc, model_owner, model_name)
    # An extension field: which of the model's variants can run without a download.
    weights = readiness(model, svc.engine.settings.checkpoints)
    return {**present.model(model, svc.engine.store.run_count(model.ref)), "x-overture-weights": weights}


@router.get("/models/{model_owner}/{model_name}/versions")
def list_versions(model_owner: str, model_name: str, _: Owner, svc: Svc, present: Present) -> dict[str, Any]:
    model = _model(svc, model_owner, model_name)
    return present.page([present.version(v) for v in reversed(model.versions)], None)


@router.get("/models/{model_owner}/{model_name}/versions/{version_id}")
def get_version(
    model_owner: str, model_name: str, version_id: str, _: Owner, svc: Svc, present: Present
) -> dict[str, Any]:
    model = _model(svc, model_owner, model_name)
    try:
        return present.version(svc.engine.registry.model_version(model, version_id))
    except UnknownModel as exc:
        raise ApiError(404, str(exc)) from None
