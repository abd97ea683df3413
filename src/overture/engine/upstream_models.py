"""Models only an upstream has, for routes such as ``--route owner/name=upstream:NAME``: their
model and version documents are fetched from the upstream at start-up, and again every
``REFRESH_SECONDS`` (a new latest version, a changed schema), and kept in the data directory, so
that a restart while the upstream is down still lists and accepts them. An upstream that cannot
be reached leaves the copy there is in place."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx

from overture.models.registry import Registry
from overture.models.remote import remote_model
from overture.upstreams import Route, Upstream

log = logging.getLogger("overture")

#: Start-up waits at most this long for each document.
FETCH_SECONDS = 5.0
#: How often the documents are fetched again.
REFRESH_SECONDS = 300.0


class UpstreamCatalog:
    def __init__(self, upstreams: dict[str, Upstream], routes: dict[str, Route], data_dir: Path) -> None:
        self.upstreams = upstreams
        self.routes = routes
        self.cache_dir = data_dir / "upstream-models"
        #: The models to describe, by upstream and ref: the versions their routes name.
        self._wanted: dict[tuple[str, str], set[str]] = {}

    def declare(self, registry: Registry) -> None:
        """Add to ``registry`` each model an ``upstream:`` route names that is not served here."""
        for key, route in self.routes.items():
            ref, _, version = key.partition(":")
            if route.kind == "upstream" and route.upstream is not None and ref not in registry.models:
                self._wanted.setdefault((route.upstream, ref), set()).update([version] if version else [])
        for (name, ref), versions in self._wanted.items():
            documents = self._fetched(self.upstreams[name], ref, sorted(versions)) or self._cached(name, ref)
            if documents is None:
                log.error("model %s is routed to upstream %s, which cannot describe it now: not served", ref, name)
                continue
            self._serve(registry, documents, ref, name)

    def refresh(self, registry: Registry) -> None:
        """Fetch each model's documents again; one the upstream cannot describe now stays as it was."""
        for (name, ref), versions in self._wanted.items():
            documents = self._fetched(self.upstreams[name], ref, sorted(versions))
            if documents is not None:
                self._serve(registry, documents, ref, name)

    def _serve(self, registry: Registry, documents: dict[str, Any], ref: str, name: str) -> None:
        try:
            model = remote_model(documents["model"], documents["versions"])
            if model.ref in registry.models:
                registry.replace(model)
            else:
                registry.add(model)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("model %s from upstream %s cannot be served: %s", ref, name, exc)

    def _fetched(self, upstream: Upstream, ref: str, versions: list[str]) -> dict[str, Any] | None:
        try:
            with httpx.Client(base_url=upstream.url, headers=upstream.headers(), timeout=FETCH_SECONDS) as http:
                model = http.get(f"/v1/models/{ref}").raise_for_status().json()
                found = [http.get(f"/v1/models/{ref}/versions/{v}").raise_for_status().json() for v in versions]
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("could not fetch model %s from upstream %s (%s); using the copy kept", ref, upstream.name, exc)
            return None
        documents = {"model": model, "versions": found}
        path = self._path(upstream.name, ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(documents))
        return documents

    def _cached(self, name: str, ref: str) -> dict[str, Any] | None:
        try:
            documents: dict[str, Any] = json.loads(self._path(name, ref).read_text())
            return documents
        except (OSError, ValueError):
            return None

    def _path(self, name: str, ref: str) -> Path:
        return self.cache_dir / name / (ref.replace("/", "__") + ".json")
