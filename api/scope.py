"""Grid scope of a token: a token limited to a grid sees that grid's subtree only.

Routes call :func:`visible_grid_codes` (or :func:`check_visible`) inside their session.
Things outside the scope answer 404, as if they did not exist, so a scoped token learns
nothing about other grids. Things without a grid are outside every scope.
"""

from __future__ import annotations

from collections.abc import Collection

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from storage.grids import subtree_codes
from storage.tokens import Principal


def visible_grid_codes(session: Session, principal: Principal) -> list[str] | None:
    """The grid codes this caller may see; None means every grid (and things without one).

    A list of codes filters well: PostgreSQL estimates ``grid_code IN (…)`` from its
    statistics, where a recursive CTE inside the query (:func:`storage.grids.subtree_query`)
    is estimated blindly and can send it down the wrong index (issue #9: incident lists).
    """
    if principal.grid_scope is None:
        return None
    return subtree_codes(session, principal.grid_scope)


def allows(visible: Collection[str] | None, grid_code: str | None) -> bool:
    """Whether something of ``grid_code`` is visible with ``visible`` (from above)."""
    return visible is None or (grid_code is not None and grid_code in visible)


def check_visible(visible: Collection[str] | None, grid_code: str | None, not_found: str) -> None:
    """Raise 404 with ``not_found`` unless something of ``grid_code`` is visible."""
    if not allows(visible, grid_code):
        raise HTTPException(status.HTTP_404_NOT_FOUND, not_found)
