"""Where upstreams send their webhooks about the predictions relayed to them (docs/providers.md).

No token: an upstream has none of this server's. Each body must carry the upstream's own
signature (its ``/v1/webhooks/default/secret``), or it is refused and polling carries on. The
route is for upstreams, not for clients, so the API's OpenAPI document leaves it out.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from overture.api.deps import Svc
from overture.api.errors import ApiError

router = APIRouter(prefix="/v1", include_in_schema=False)


@router.post("/upstreams/{name}/predictions/{prediction_id}/webhook", status_code=204)
async def upstream_webhook(name: str, prediction_id: str, request: Request, svc: Svc) -> Response:
    relay = svc.engine.relays.get(name)
    if relay is None:
        raise ApiError(404, f"No upstream is named {name}")
    body = await request.body()
    if not relay.receive(prediction_id, body, dict(request.headers)):
        raise ApiError(401, "The webhook's signature is not the upstream's")
    return Response(status_code=204)
