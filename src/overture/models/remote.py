"""Models that only an upstream serves (docs/providers.md): declared here from the upstream's own
model and version documents, so that they are listed, validated and routed like any other, while
every prediction of theirs is relayed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from overture.models.base import Context, Model, Predictor, Version
from overture.models.schema import InputSchema


class RemotePredictor(Predictor):
    """Stands for an upstream's model, which never runs here: routing sends its jobs upstream."""

    uses_gpu = False

    def predict(self, ctx: Context, *args: Any, **inputs: Any) -> Any:
        raise RuntimeError("this model runs only on its upstream; route it there with --route MODEL=upstream:NAME")


@dataclass(frozen=True)
class RemoteVersion(Version):
    #: The upstream's OpenAPI document of this version, shown as it is.
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @cached_property
    def inputs(self) -> InputSchema:
        return InputSchema.from_openapi(self.document)

    @cached_property
    def openapi_schema(self) -> dict[str, Any]:
        return dict(self.document)


def remote_model(model: Mapping[str, Any], versions: list[Mapping[str, Any]]) -> Model:
    """A model from an upstream's ``GET /v1/models/{owner}/{name}`` and the version documents its
    routes ask for (its ``latest_version`` when none is named); oldest version first."""
    docs = [v for v in versions if v] or [model.get("latest_version") or {}]
    built = tuple(
        RemoteVersion(
            id=str(doc.get("id") or f"{model['owner']}-{model['name']}-upstream"),
            predictor=RemotePredictor,
            created_at=str(doc.get("created_at") or model.get("created_at") or Version.created_at),
            document=doc.get("openapi_schema") or {},
        )
        for doc in sorted(docs, key=lambda doc: str(doc.get("created_at") or ""))
    )
    return Model(
        owner=str(model["owner"]),
        name=str(model["name"]),
        description=str(model.get("description") or ""),
        versions=built,
        github_url=model.get("github_url"),
        paper_url=model.get("paper_url"),
        license_url=model.get("license_url"),
        created_at=str(model.get("created_at") or Model.created_at),
    )
