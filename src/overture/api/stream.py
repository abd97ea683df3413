"""Server-sent events for a prediction, in the exact form the real client parses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from overture.api.auth import owner_or_signed
from overture.api.deps import Present, Svc
from overture.api.errors import ApiError
from overture.api.signing import stream_subject
from overture.status import TERMINAL

router = APIRouter(prefix="/v1")

#: The token's owner, or None for a reader with the signed ``urls.stream``.
Reader = Annotated[str | None, Depends(owner_or_signed(lambda path: stream_subject(path["prediction_id"])))]

#: Comment lines this often: the client gives up after 30 s without a byte.
KEEPALIVE_SECONDS = 10
#: Look at the store at least this often, whatever the notifications say.
_POLL_SECONDS = 5.0


@router.get("/predictions/{prediction_id}/stream")
async def stream_prediction(
    prediction_id: str, owner: Reader, svc: Svc, present: Present, last_event_id: str | None = Header(default=None)
) -> EventSourceResponse:
    """Replays what was already emitted (or what follows ``Last-Event-ID``), then the rest live,
    and closes after ``done``. Only ``output``, ``logs``, ``error`` and ``done`` are sent."""
    store = svc.engine.store
    if await anyio.to_thread.run_sync(store.prediction, prediction_id, owner) is None:
        raise ApiError(404, f"Prediction {prediction_id} does not exist")
    after = int(last_event_id) if last_event_id and last_event_id.strip().isdigit() else None
    notifier = svc.engine.notifier

    async def events() -> AsyncIterator[ServerSentEvent]:
        nonlocal after
        while True:
            changed = notifier.subscribe(prediction_id)
            try:
                rows = await anyio.to_thread.run_sync(store.events_after, prediction_id, after)
                for row in rows:
                    after = row.seq
                    yield ServerSentEvent(data=present.stream_data(row.data), event=row.event, id=str(row.seq))
                    if row.event == "done":
                        return
                if not rows:
                    prediction = await anyio.to_thread.run_sync(store.prediction, prediction_id)
                    if prediction is None or prediction.status in TERMINAL:
                        # Its events were removed (retention): end the stream rather than hang.
                        yield ServerSentEvent(data="{}", event="done", id=str(after or 0))
                        return
                with anyio.move_on_after(_POLL_SECONDS):
                    await changed
            finally:
                notifier.unsubscribe(prediction_id, changed)

    return EventSourceResponse(events(), ping=KEEPALIVE_SECONDS, headers={"Cache-Control": "no-store"})
