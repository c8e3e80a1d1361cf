"""Fused evaluation: round r's train replies carry the federated evaluation of round r−1's model.

Federated evaluation (McMahan et al. 2017, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", arXiv:1602.05629) is the example-weighted mean of the
clients' held-out loss and accuracy: L = Σ_k m_k L_k / Σ_k m_k, m_k client k's held-out
examples. Run as its own stage it costs a second round trip per round: every sampled
node receives the new model again, only to evaluate it. In cross-device training the
model a client receives at the start of round r *is* the model released by round r − 1,
so the client can evaluate it on its held-out data before it trains (Bonawitz et al. 2019,
"Towards Federated Learning at Scale: System Design", arXiv:1902.01046, run evaluation as
device tasks next to training): one round trip per round, and the evaluation of round
r − 1's model arrives with round r's updates, measured on round r's train sample.

The client reports it in the train reply's metrics (``tasks.wire.FUSED_LOSS``,
``FUSED_ACCURACY``, ``FUSED_NUM_EXAMPLES``). These functions are the server's side, pure:
:func:`split_fused` separates those keys from the train metrics (so training's own
validation and example-weighted train metrics never see them), :func:`check_fused`
validates them as an evaluate reply is validated (named reason codes), and
:func:`aggregate_fused` is the weighted mean above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from strategies.core.reply_checks import (
    INVALID_METRIC_TYPE,
    Rejection,
    check_metrics,
    check_num_examples,
)
from tasks import wire

V = TypeVar("V")

#: The reply metric keys of a fused evaluation.
FUSED_KEYS = (wire.FUSED_LOSS, wire.FUSED_ACCURACY, wire.FUSED_NUM_EXAMPLES)


@dataclass(frozen=True)
class FusedResult:
    """The federated evaluation carried by one round's train replies.

    Attributes
    ----------
    loss : float
        Example-weighted mean held-out loss.
    accuracy : float or None
        Example-weighted mean held-out accuracy (None: a regression task).
    num_examples : int
        Held-out examples evaluated, over all nodes.
    """

    loss: float
    accuracy: float | None
    num_examples: int


def split_fused(metrics: Mapping[str, V]) -> tuple[dict[str, V], dict[str, V] | None]:
    """A train reply's metrics without the fused keys, and the fused part (None if it has none).

    Parameters
    ----------
    metrics : Mapping[str, object]
        The reply's ``metrics`` record.

    Returns
    -------
    tuple
        ``(train metrics, fused)``; ``fused`` maps the fused keys present to their values.
    """
    fused = {k: v for k, v in metrics.items() if k in FUSED_KEYS}
    train = {k: v for k, v in metrics.items() if k not in FUSED_KEYS}
    return train, (fused or None)


def check_fused(fused: Mapping[str, object], *, max_num_examples: int) -> Rejection | None:
    """Why one node's fused evaluation cannot be counted, or None.

    The checks of an evaluate reply: an integer example count in 1..``max_num_examples``
    and finite numbers; the loss is required.
    """
    rejection = check_num_examples(fused.get(wire.FUSED_NUM_EXAMPLES), max_num_examples=max_num_examples)
    if rejection is not None:
        return Rejection(rejection.reason, f"{wire.FUSED_NUM_EXAMPLES}: {rejection.detail}")
    if wire.FUSED_LOSS not in fused:
        return Rejection(INVALID_METRIC_TYPE, f"{wire.FUSED_LOSS} is missing from a fused evaluation")
    return check_metrics(fused)


def aggregate_fused(parts: Sequence[Mapping[str, object]]) -> FusedResult | None:
    """Example-weighted mean loss and accuracy of checked fused evaluations (None if there are none).

    The accuracy is averaged over the nodes that report one (all of them in a
    classification task), weighted by their own example counts.
    """
    if not parts:
        return None
    counts = [wire.as_int(p[wire.FUSED_NUM_EXAMPLES]) for p in parts]
    total = sum(counts)
    loss = sum(n * wire.as_float(p[wire.FUSED_LOSS]) for n, p in zip(counts, parts, strict=True)) / total
    with_accuracy = [(n, p) for n, p in zip(counts, parts, strict=True) if wire.FUSED_ACCURACY in p]
    accuracy = None
    if with_accuracy:
        weight = sum(n for n, _ in with_accuracy)
        accuracy = sum(n * wire.as_float(p[wire.FUSED_ACCURACY]) for n, p in with_accuracy) / weight
    return FusedResult(loss=loss, accuracy=accuracy, num_examples=total)
