"""A node's Delta datasets: the files and directories at the top of its data directory, published
as node labels `delta.dataset.<name>=1` so that placement can find the nodes holding a dataset."""
from __future__ import annotations

import os

DATASET_LABEL = "delta.dataset."


def dataset_labels(names) -> dict[str, str]:
    return {DATASET_LABEL + n: "1" for n in names}


def datasets_in(data_dir: str) -> list[str]:
    try:
        return sorted(e for e in os.listdir(data_dir) if not e.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def node_labels(data_dir: str, labels: dict[str, str]) -> dict[str, str]:
    """The node's own labels with its datasets' (read now, so a reconnect sees new files)."""
    return {**dataset_labels(datasets_in(data_dir)), **labels} if data_dir else dict(labels)
