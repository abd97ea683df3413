"""Prediction routes: create (by version, model or deployment), get, list, cancel."""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import BaseModel, ConfigDict

from overture.api.auth import Owner, owner_or_signed
from overture.api.deps import Present, Services, Svc, decode_cursor, encode_cursor
from overture.api.errors import ApiError, invalid_request
from overture.api.present import Presenter
from overture.api.signing import page_subject
from overture.engine.netpolicy import AddressPolicy
from overture.engine.webhooks import check_url, delivery_summary
from overture.errors import InvalidInput, UnknownModel, WebhookRefused
from overture.status import TERMINAL, Status
from overture.store.db import PredictionRow

router = APIRouter(prefix="/v1")

WebhookEvent = Literal["start", "output", "logs", "completed"]
_PREFER_WAIT = re.compile(r"^\s*wait(?:\s*=\s*(\d+))?\s*$")
#: Answer this long before the client's own deadline (N + 0.5 s) so the reply always arrives.
_WAIT_MARGIN = 0.3


class ModelPredictionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: dict[str, Any] | None = None
    webhook: str | None = None
    webhook_completed: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    stream: bool | None = None


class PredictionRequest(ModelPredictionRequest):
    version: str


@dataclass
class PredictionHeaders:
    prefer: str | None
    cancel_after: str | None
    #: An Overture extension (docs/providers.md): a create repeated with the same key gets the
    #: first one's prediction back, so that a relaying server never creates one twice.
    idempotency_key: str | None = None


def _headers(
    prefer: str | None = Header(default=None),
    cancel_after: str | None = Header(default=None),
    idempotency_key: str | None = Header(default=None),
) -> PredictionHeaders:
    return PredictionHeaders(prefer, cancel_after, idempotency_key)


Headers = Annotated[PredictionHeaders, Depends(_headers)]


def show(svc: Services, present: Presenter, row: PredictionRow, status: str | None = None) -> dict[str, Any]:
    """The prediction as the API shows it, with its webhook's delivery state when it has one, and
    its place in the queue while it waits."""
    webhook = delivery_summary(svc.engine.store.deliveries(row.id)) if row.webhook else None
    queue = svc.engine.queue_spot(row.id) if row.status == Status.STARTING else None
    return present.prediction(row, status=status, webhook=webhook, queue=queue)


_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")
#: Replicate's floor for ``Cancel-After``.
_MIN_CANCEL_AFTER = 5.0


def cancel_after(value: str | None) -> float | None:
    """Seconds from a ``Cancel-After`` header: ``30s``, ``5m``, ``1h30m`` or a bare number of seconds."""
    if value is None:
        return None
    text = value.strip().lower()
    match = _DURATION.match(text)
    if text and match is not None:
        seconds = sum(float(match.group(unit) or 0) * factor for unit, factor in (("h", 3600), ("m", 60), ("s", 1)))
    else:
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
    if not math.isfinite(seconds):
        raise invalid_request([("Cancel-After", f"{value!r} is not a duration such as 30s, 5m or 1h30m")])
    if seconds < _MIN_CANCEL_AFTER:
        raise invalid_request([("Cancel-After", f"must be at least {_MIN_CANCEL_AFTER:g} seconds")])
    return seconds


def prefer_wait(prefer: str | None) -> float | None:
    """Seconds to hold the request for ``Prefer: wait[=N]`` (N clamped to 1..60), else None."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        match = _PREFER_WAIT.match(preference)
        if match:
            return float(min(max(int(match.group(1) or 60), 1), 60))
    return None


def _webhook_errors(body: ModelPredictionRequest, addresses: AddressPolicy) -> list[tuple[str, str]]:
    """Why each webhook URL the server must not call is refused, named by the field that carried it."""
    errors = []
    for field, url in (("webhook", body.webhook), ("webhook_completed", body.webhook_completed)):
        if url is None:
            continue
        try:
            check_url(url, addresses)
        except WebhookRefused as exc:
            errors.append((field, str(exc)))
        except ValueError:  # urlsplit's verdict on a URL it cannot parse, such as "http://[::1"
            errors.append((field, "must be an http(s) URL"))
    return errors


async def _create(
    svc: Svc,
    present: Present,
    owner: str,
    ref: str,
    body: ModelPredictionRequest,
    headers: PredictionHeaders,
    response: Response,
    deployment: str | None = None,
) -> dict[str, Any]:
    try:
        model, version = svc.engine.registry.version(ref)
    except UnknownModel as exc:
        raise ApiError(404, str(exc)) from None
    webhook = body.webhook or body.webhook_completed
    events = body.webhook_events_filter
    if body.webhook is None and body.webhook_completed is not None:
        events = ["completed"]
    deadline = cancel_after(headers.cancel_after)

    def create() -> PredictionRow:
        # One 422 names every bad field, the request's own and the inputs alike.
        if errors := _webhook_errors(body, svc.engine.webhooks.policy.addresses):
            try:
                svc.engine.validate(owner, version, body.input)
            except InvalidInput as exc:
                raise invalid_request(errors, exc.errors) from None
            raise invalid_request(errors)
        return svc.engine.create(
            owner,
            model,
            version,
            body.input,
            webhook=webhook,
            webhook_events_filter=events,
            stream=bool(body.stream),
            cancel_after=deadline,
            deployment=deployment,
            idempotency_key=headers.idempotency_key,
        )

    row = await anyio.to_thread.run_sync(create)
    response.status_code = 201
    response.headers["Location"] = f"{present.base}/v1/predictions/{row.id}"
    wait = prefer_wait(headers.prefer)
    if wait is None:
        return show(svc, present, row)
    response.headers["Preference-Applied"] = f"wait={int(wait)}"
    final = await svc.engine.wait(row.id, wait - _WAIT_MARGIN) or row
    # Anything short of terminal is reported as "starting": run() then polls instead of
    # returning a missing output (gotcha 1).
    return show(svc, present, final, status=None if final.status in TERMINAL else Status.STARTING)


@router.post("/predictions", status_code=201)
async def create_prediction(
    body: PredictionRequest, owner: Owner, svc: Svc, present: Present, response: Response, headers: Headers
) -> dict[str, Any]:
    return await _create(svc, present, owner, body.version, body, headers, response)


@router.post("/models/{model_owner}/{model_name}/predictions", status_code=201)
async def create_model_prediction(
    model_owner: str,
    model_name: str,
    body: ModelPredictionRequest,
    owner: Owner,
    svc: Svc,
    present: Present,
    response: Response,
    headers: Headers,
) -> dict[str, Any]:
    return await _create(svc, present, owner, f"{model_owner}/{model_name}", body, headers, response)


@router.post("/deployments/{deployment_owner}/{deployment_name}/predictions", status_code=201)
async def create_deployment_prediction(
    deployment_owner: str,
    deployment_name: str,
    body: ModelPredictionRequest,
    owner: Owner,
    svc: Svc,
    present: Present,
    response: Response,
    headers: Headers,
) -> dict[str, Any]:
    """A deployment is served by the model of the same name; the prediction remembers the deployment."""
    ref = f"{deployment_owner}/{deployment_name}"
    return await _create(svc, present, owner, ref, body, headers, response, deployment=ref)


#: The token's owner, or None for a reader holding the prediction's signed page (``urls.web``): the
#: playground page that a shared link opens reads the prediction with that page's signature.
PageReader = Annotated[str | None, Depends(owner_or_signed(lambda path: page_subject(path["prediction_id"])))]


# Clients poll this every half second per prediction. A primary-key read from the database takes a
# fraction of a millisecond, less than the thread-pool round trip a plain def would add, so it
# runs on the event loop.
@router.get("/predictions/{prediction_id}")
async def get_prediction(
    prediction_id: str, owner: PageReader, svc: Svc, present: Present, expires: str | None = Query(default=None)
) -> dict[str, Any]:
    if owner is None and expires is not None:  # a shared link's reader: its signature checked its expires
        present = present.for_link(int(expires))
    return show(svc, present, _prediction(svc, owner, prediction_id))


def _prediction(svc: Services, owner: str | None, prediction_id: str) -> PredictionRow:
    row = svc.engine.store.prediction(prediction_id, owner)
    if row is None:
        raise ApiError(404, f"Prediction {prediction_id} does not exist")
    return row


@router.post("/predictions/{prediction_id}/cancel")
def cancel_prediction(prediction_id: str, owner: Owner, svc: Svc, present: Present) -> dict[str, Any]:
    row = svc.engine.cancel(prediction_id, owner)
    if row is None:
        raise ApiError(404, f"Prediction {prediction_id} does not exist")
    return show(svc, present, row)


#: What ``GET /v1/predictions?status=`` accepts.
_STATUSES = ", ".join(Status)
_MODEL_REF = re.compile(r"^[^/\s]+/[^/\s]+$")


@router.get("/predictions")
def list_predictions(
    owner: Owner,
    svc: Svc,
    present: Present,
    cursor: str | None = Query(default=None),
    model: str | None = Query(default=None),
    status: str | None = Query(default=None),
) -> dict[str, Any]:
    """Newest first. ``model`` and ``status`` are Overture's filters (Replicate has none): each
    page, and its ``next`` link, holds only the matching predictions."""
    errors = []
    if model is not None and not _MODEL_REF.match(model):
        errors.append(("model", f"{model!r} is not a model name such as overture/synth"))
    if status is not None and status not in {s.value for s in Status}:
        errors.append(("status", f"{status!r} is not one of {_STATUSES}"))
    if errors:
        raise invalid_request(errors)
    size = svc.settings.page_size
    rows = svc.engine.store.predictions_page(owner, decode_cursor(cursor), size + 1, model, status)
    next_path = None
    if len(rows) > size:
        query = {"cursor": encode_cursor(rows[size - 1].seq), "model": model, "status": status}
        next_path = "/v1/predictions?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    return present.page([show(svc, present, r) for r in rows[:size]], next_path)
