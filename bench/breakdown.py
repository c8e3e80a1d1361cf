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
  split by when the handlers ran (``dispatch_first`` / ``return_last``, recorded from the
  replies' timestamps where the app reports them): ``first_wait_s``, the stages' waits
  for their first handler (the message extractor's 0–0.1 s walk, the first Ray
  submission), ``last_return_s``, from each stage's last handler to its reply validated
  on the server, and ``between_s``, the rest: the engine's work between one handler and
  the next (returning a reply, submitting the next message), per message in
  ``between_per_message_ms``;
- ``aggregate_s``, ``central_eval_s``, ``checkpoint_s``: the server between stages;
- ``rest_s``: the round's remaining time (configure, metrics.json, logging).

:func:`first_round` splits round 1's extra time over a steady round (part of the fixed
start-up) the same way: waiting for the first handler (Ray and the actor starting, the
ClientApp imported into it), the handlers' first calls (each node's data, the model, the
first torch calls), and the rest.

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
#: The engine's waits before each stage's first handler and after its last one.
FIRST, LAST = "dispatch_first", "return_last"


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
    if all(FIRST in r["phases"] and LAST in r["phases"] for r in steady):
        first, last = median_of(FIRST), median_of(LAST)
        # Gaps between consecutive handlers: each stage's messages after its first one.
        stage_count = _median([sum(1 for k in STAGES if k in r["phases"]) for r in steady])
        gaps = max(messages - stage_count, 1)
        out.update(
            first_wait_s=first,
            last_return_s=last,
            between_s=engine - first - last,
            between_per_message_ms=1000 * (engine - first - last) / gaps,
        )
    return out


def first_round(rounds: Sequence[Mapping[str, Any]], steady: Mapping[str, Any]) -> dict[str, float] | None:
    """Round 1's extra time over the steady round, split (see the module docstring).

    Parameters
    ----------
    rounds : sequence of mapping
        metrics.json ``rounds``.
    steady : mapping
        :func:`of_run` of the same run (its steady medians).

    Returns
    -------
    dict or None
        ``extra_s`` (round 1 minus the steady round), ``worker_start_s`` (round 1's wait
        for its first handler beyond a steady round's), ``first_calls_s`` (round 1's
        handler time beyond a steady round's) and ``other_s`` (the rest); ``None`` for a
        run without these timings.
    """
    one = next((r for r in rounds if r["round"] == 1), None)
    if one is None or not one.get("phases") or FIRST not in one["phases"] or "first_wait_s" not in steady:
        return None
    extra = float(one["seconds"]) - float(steady["round_s"])
    worker = float(one["phases"][FIRST]) - float(steady["first_wait_s"])
    calls = float(one["phases"].get("client_handler", 0.0)) - float(steady["handler_s"])
    other = extra - worker - calls
    return {"extra_s": extra, "worker_start_s": worker, "first_calls_s": calls, "other_s": other}
