"""A node module whose own dependency is not installed."""

import flowrun_missing_dependency  # noqa: F401


def work() -> None:
    """Never reached: the import above fails."""
