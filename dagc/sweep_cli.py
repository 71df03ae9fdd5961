"""Placeholder: the `sweep` and `report` commands are added here (issue 3)."""


def add_commands(commands) -> None:
    """Register `dagc sweep` and `dagc report` on the top-level subparsers."""
