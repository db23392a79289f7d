"""Short names of a run's parts in file and run names: the "id, else name" rule, the prepared
stem."""

from __future__ import annotations

from typing import Any


def group_id(node: Any) -> str:
    """A config group's short name: its ``id``, else its ``name`` (else ``none``)."""
    get = node.get if hasattr(node, "get") else lambda k: getattr(node, k, None)
    return str(get("id") or get("name") or "none")


def prepared_stem(data_id: str, preprocess_id: str) -> str:
    """``<data.id>-<preprocess.id>``, e.g. ``mnist-whiten``: the prepared pair's file stem."""
    return f"{data_id}-{preprocess_id}"
