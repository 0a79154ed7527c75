"""Raises while being imported (the supervisor must exit with code 3)."""

raise RuntimeError("workers-import-error-marker")

app = None  # pragma: no cover
