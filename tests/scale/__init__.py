"""The city simulator (issue 18): a city's control plane on PostgreSQL with simulated
cameras. ``python -m tests.scale`` runs the measurements (bench/README.md); the small city
of ``test_small_city.py`` runs the same code in ``make test``."""
