"""Grids routes (placeholder until the grids/cases/delivery work lands)."""

from fastapi import APIRouter

router = APIRouter(tags=["grids"])
