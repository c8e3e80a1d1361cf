"""curves.png: accuracy and loss per round, centralized and federated."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _series(rounds: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["round"], r[key]) for r in rounds if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(rounds: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Two panels: accuracy (central, federated) and loss (train, federated, central)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("central_accuracy", "centralized"), ("federated_accuracy", "federated")):
        x, y = _series(rounds, key)
        if x:
            ax_acc.plot(x, y, marker="o", label=label)
    for key, label in (
        ("train_loss", "train (clients)"),
        ("federated_loss", "federated eval"),
        ("central_loss", "centralized eval"),
    ):
        x, y = _series(rounds, key)
        if x:
            ax_loss.plot(x, y, marker="o", label=label)
    ax_acc.set(xlabel="round", ylabel="accuracy", title="Accuracy")
    ax_loss.set(xlabel="round", ylabel="loss", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
