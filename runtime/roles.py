"""The roles a process can run (``xueliang serve --role``); light to import for the CLI."""

from __future__ import annotations

__all__ = ["ROLES"]

#: ``all`` serves the API and runs cameras; ``api`` only serves the API (stateless, add as
#: many as needed); ``worker`` only runs cameras (leased through the database).
ROLES = ("all", "api", "worker")
