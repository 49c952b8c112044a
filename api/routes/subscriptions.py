"""Webhook subscriptions of the grid platform, with the log of every delivery attempt."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy.orm import Session

from api.deps import ServicesDep, require
from api.schemas.subscriptions import (
    DeliveryList,
    DeliveryOut,
    SubscriptionCreate,
    SubscriptionList,
    SubscriptionOut,
)
from api.scope import visible_grid_codes
from ingest.egress import Purpose
from storage import delivery as repo
from storage.audit import audit
from storage.grid_models import Subscription
from storage.tokens import Principal

router = APIRouter(prefix="/subscriptions", tags=["subscriptions"])
Platform = Annotated[Principal, Depends(require("grid_platform"))]


def _out(session: Session, row: Subscription) -> SubscriptionOut:
    cursor = repo.get_cursor(session, row.id)
    return SubscriptionOut(
        id=row.id,
        url=row.url,
        types=row.types,  # validated on the way in
        grid_codes=row.grid_codes,
        created_at=row.created_at,
        batch=row.batch,
        last_delivered_seq=cursor.last_delivered_seq if cursor else 0,
        failures=cursor.failures if cursor else 0,
        next_attempt_at=cursor.next_attempt_at if cursor else None,
        last_error=cursor.last_error if cursor else None,
    )


def _owned(session: Session, who: Principal, subscription_id: str) -> Subscription:
    """The subscription, if this caller may see it (a scoped token: only its own)."""
    row = repo.get_subscription(session, subscription_id)
    if row is None or (who.grid_scope is not None and row.created_by != who.token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no subscription {subscription_id}")
    return row


def _grid_codes(session: Session, who: Principal, wanted: list[str] | None) -> list[str] | None:
    """A scoped token subscribes to its own subtree at most."""
    visible = visible_grid_codes(session, who)
    if visible is None:
        return wanted
    if wanted is None:
        return [str(who.grid_scope)]
    outside = sorted(set(wanted) - set(visible))
    if outside:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["body", "grid_codes"],
                    "msg": f"outside this token's grid scope: {', '.join(outside)}",
                    "type": "value_error",
                }
            ],
        )
    return wanted


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SubscriptionOut)
def create_subscription(
    body: SubscriptionCreate, services: ServicesDep, who: Platform
) -> SubscriptionOut:
    """Deliver every event appended from now on (of these types and grids) to a URL.

    Each event is one POST with `X-Xueliang-Signature: sha256=<hex HMAC-SHA256 of the body>`
    and `X-Xueliang-Seq`, retried with capped exponential backoff until a 2xx answer, in
    `seq` order: a subscription waits on its oldest undelivered event. With `batch` N > 1,
    one POST carries up to N consecutive events as `{"events": [...]}` (`X-Xueliang-Seq`:
    the last seq, `X-Xueliang-Seq-First`: the first) and a failed POST is retried whole.

    The URL's host must not be, or resolve to, a loopback, link-local, unspecified or cloud
    metadata address unless `XUELIANG_EGRESS__ALLOW` lets it through (422 naming `url`);
    it is checked again before every delivery.
    """
    services.egress.check_url("url", body.url, Purpose.WEBHOOK)
    with services.tx() as session:
        new = repo.NewSubscription(
            url=body.url,
            secret_enc=services.secrets.encrypt(body.secret.get_secret_value()),
            types=list(body.types) if body.types else None,
            grid_codes=_grid_codes(session, who, body.grid_codes),
            created_by=who.token_id,
            batch=body.batch,
        )
        row = repo.create_subscription(session, new)
        details = {"url": row.url, "batch": row.batch}
        audit(session, who.name, "create", "subscription", row.id, details)
        return _out(session, row)


@router.get("", response_model=SubscriptionList)
def list_subscriptions(services: ServicesDep, who: Platform) -> SubscriptionList:
    """All subscriptions; a grid-scoped token sees those it created."""
    mine = who.token_id if who.grid_scope is not None else None
    with services.db.session() as session:
        rows = repo.list_subscriptions(session, created_by=mine)
        return SubscriptionList(items=[_out(session, r) for r in rows])


@router.get("/{subscription_id}", response_model=SubscriptionOut)
def get_subscription(subscription_id: str, services: ServicesDep, who: Platform) -> SubscriptionOut:
    with services.db.session() as session:
        return _out(session, _owned(session, who, subscription_id))


@router.delete("/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_subscription(subscription_id: str, services: ServicesDep, who: Platform) -> None:
    """Stop deliveries; the subscription's cursor and delivery log are deleted with it."""
    with services.tx() as session:
        _owned(session, who, subscription_id)
        repo.delete_subscription(session, subscription_id)
        audit(session, who.name, "delete", "subscription", subscription_id)


@router.get("/{subscription_id}/deliveries", response_model=DeliveryList)
def list_deliveries(
    subscription_id: str,
    services: ServicesDep,
    who: Platform,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Attempts older than this id.")
    ] = None,
) -> DeliveryList:
    """Delivery attempts, newest first: seq, attempt number, HTTP status or error, duration."""
    with services.db.session() as session:
        _owned(session, who, subscription_id)
        rows = repo.list_deliveries(session, subscription_id, limit, before)
        items = [DeliveryOut.model_validate(r, from_attributes=True) for r in rows]
    next_before = items[-1].id if len(items) == limit else None
    return DeliveryList(items=items, next_before=next_before)
