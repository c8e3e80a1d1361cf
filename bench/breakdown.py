"""Where a simulation round's overhead goes, from the run's own per-round phase timings.

The app records each round's phases in metrics.json (``strategies/core/phases.py``): the
train and evaluate stages (messages made → replies validated), aggregation, central
evaluation, the checkpoint, and the sums over the round's replies of the ClientApp
handler's time and of the training inside it. With one Ray actor the handlers run one
after another, so per steady round (median over rounds 2..R):

- ``handler_s``: the ClientApp's handlers, all replies (training, evaluation, record
  conversions); ``handler_beyond_plain_s`` = ``handler_s`` minus the plain-PyTorch round
  doing the same training and evaluation: the app's own per-message work;
- ``engine_s``: the stages' wall time minus ``handler_s``: Flower's engine between the
  ServerApp and the handler (Ray task submission and actor dispatch, (de)serialization of
  the arrays, the message extractor's and the Grid's polling), per message in
  ``engine_per_message_ms``;
- ``aggregate_s``, ``central_eval_s``, ``checkpoint_s``: the server between stages;
- ``rest_s``: the round's remaining time (configure, metrics.json, logging).

No profiler runs, so the rounds are timed as they run in the benchmark. A run that does
not record phases (an older checkout under ``--compare-app``) gives the round time only.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

#: Phase keys of metrics.json rows (strategies/core/phases.py; not imported: an older app's
#: results are read too, and bench stays independent of the app's packages here).
STAGES = ("train_stage", "evaluate_stage")
SERVER = ("aggregate", "central_eval", "checkpoint")


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def of_run(rounds: Sequence[Mapping[str, Any]], plain_round_s: float, skip: int = 1) -> dict[str, Any]:
    """The overhead breakdown of one run's steady rounds (see the module docstring).

    Parameters
    ----------
    rounds : sequence of mapping
        metrics.json ``rounds`` (round 0 is the initial model and is skipped).
    plain_round_s : float
        The plain-PyTorch steady round doing the same training and evaluation.
    skip : int
        Start-up rounds left out (round 1 starts Ray and the actor).

    Returns
    -------
    dict
        Medians in seconds; ``{"round_s": ..., "phases": False}`` for a run without phases.
    """
    steady = [r for r in rounds if r["round"] > skip] or [r for r in rounds if r["round"] > 0]
    round_s = _median([float(r["seconds"]) for r in steady])
    if not steady or not all(r.get("phases") for r in steady):
        return {"round_s": round_s, "plain_s": plain_round_s, "phases": False}

    def median_of(key: str) -> float:
        return _median([float(r["phases"].get(key, 0.0)) for r in steady])

    stages = _median([sum(float(r["phases"].get(k, 0.0)) for k in STAGES) for r in steady])
    handler = median_of("client_handler")
    engine = _median(
        [
            sum(float(r["phases"].get(k, 0.0)) for k in STAGES)
            - float(r["phases"].get("client_handler", 0.0))
            for r in steady
        ]
    )
    # Messages a round sends: train (less dropped stragglers) and evaluate.
    messages = _median(
        [int(r.get("sampled", 0)) - int(r.get("dropped", 0)) + int(r.get("eval_sampled", 0)) for r in steady]
    )
    out = {
        "phases": True,
        "messages": messages,
        "round_s": round_s,
        "plain_s": plain_round_s,
        "overhead_s": round_s - plain_round_s,
        "stages_s": stages,
        "handler_s": handler,
        "client_train_s": median_of("client_train"),
        "handler_beyond_plain_s": handler - plain_round_s,
        "engine_s": engine,
        "engine_per_message_ms": 1000 * engine / max(messages, 1),
        **{f"{k}_s": median_of(k) for k in SERVER},
    }
    accounted = stages + sum(out[f"{k}_s"] for k in SERVER)
    out["rest_s"] = round_s - accounted
    return out
