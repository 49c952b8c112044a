"""HTTP only: the FastAPI app factory, dependencies, middleware, one router per resource,
request/response schemas, and the web console's static files.

Routes read repositories and call the runtime through what the composition root handed the
app (``app.state.process``); nothing outside ``api`` and ``cli`` imports this package.
May import: ``config``, ``analytics``, ``storage``, ``ingest``, ``live``, ``delivery``,
``runtime``.
"""
