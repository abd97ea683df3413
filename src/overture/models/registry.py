"""Every model the server offers, indexed by ``owner/name`` and by globally unique version id."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from overture.errors import UnknownModel
from overture.models.base import Model, Version


class Registry:
    def __init__(self, models: Iterable[Model]):
        self.models: dict[str, Model] = {}
        self.versions: dict[str, tuple[Model, Version]] = {}
        for model in models:
            self.add(model)

    def add(self, model: Model) -> None:
        if model.ref in self.models:
            raise ValueError(f"model {model.ref} is declared twice")
        for version in model.versions:
            for vid in (version.id, *version.aliases):
                if vid in self.versions:
                    # run("o/n:v") posts only the bare id, so ids must be unique across all models.
                    raise ValueError(
                        f"version id {vid!r} of {model.ref} is already used by {self.versions[vid][0].ref}"
                    )
                self.versions[vid] = (model, version)
        self.models[model.ref] = model

    def replace(self, model: Model) -> None:
        """Put ``model`` in place of the one declared under its ref: its new versions are added
        before the ones it no longer has are removed, so a reader never misses a version both have."""
        old = self.models[model.ref]
        for version in model.versions:
            for vid in (version.id, *version.aliases):
                holder = self.versions.get(vid)
                if holder is not None and holder[0].ref != model.ref:
                    raise ValueError(f"version id {vid!r} of {model.ref} is already used by {holder[0].ref}")
                self.versions[vid] = (model, version)
        kept = {vid for version in model.versions for vid in (version.id, *version.aliases)}
        for version in old.versions:
            for vid in (version.id, *version.aliases):
                if vid not in kept:
                    self.versions.pop(vid, None)
        self.models[model.ref] = model

    def model(self, ref: str) -> Model:
        try:
            return self.models[ref]
        except KeyError:
            raise UnknownModel(f"Model {ref} does not exist") from None

    def version(self, ref: str) -> tuple[Model, Version]:
        """Resolve ``version`` as the API accepts it: ``id``, ``owner/name`` or ``owner/name:id``."""
        if ":" in ref:
            model_ref, vid = ref.split(":", 1)
            model = self.model(model_ref)
            return model, self.model_version(model, vid)
        if "/" in ref:
            model = self.model(ref)
            return model, model.latest_version
        if ref not in self.versions:
            raise UnknownModel(f"Version {ref} does not exist")
        return self.versions[ref]

    def model_version(self, model: Model, vid: str) -> Version:
        found = self.versions.get(vid)
        if found is None or found[0] is not model:
            raise UnknownModel(f"Version {vid} of model {model.ref} does not exist")
        return found[1]


#: Modules whose ``MODELS`` lists make up the built-in catalogue.
BUILTIN_MODULES = (
    "overture.models.synth",
    "overture.models.musicgen",
    "overture.models.stable_audio",
    "overture.models.riffusion",
)


def default_registry(extra_modules: Iterable[str] = ()) -> Registry:
    """The built-in models plus those declared in ``MODELS`` of each extra importable module."""
    registry = Registry([])
    for name in (*BUILTIN_MODULES, *extra_modules):
        for model in importlib.import_module(name).MODELS:
            registry.add(model)
    return registry
