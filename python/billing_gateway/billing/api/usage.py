"""``/usage-records``: metered spend, once per idempotency key of its subscription."""

from __future__ import annotations

from litestar import Response, post
from litestar.exceptions import HTTPException
from litestar.params import JSONBody

from billing_gateway.billing.wire import UsageIn, UsageRecordOut

from .auth import need
from .common import Req, Store, Who, idempotency_key, micros, out
from .subscriptions import owned_subscription

__all__ = ["HANDLERS"]


@post("/usage-records", status_code=201, sync_to_thread=True)
def create_usage(request: Req, store: Store, who: Who, data: JSONBody[UsageIn]) -> Response[UsageRecordOut]:
    need(who, "billing:usage:create")
    owned_subscription(store, who, data.subscription_id)
    amount = micros(data.amount, "amount")
    assert amount is not None
    key = data.idempotency_key or idempotency_key(request)
    if key is None:
        raise HTTPException(
            status_code=422, detail="idempotency_key: required (or an Idempotency-Key header)"
        )
    record, created = store.record_usage(data.subscription_id, amount, key)
    return Response(out(UsageRecordOut, record, amount=record.amount), status_code=201 if created else 200)


HANDLERS = [create_usage]
