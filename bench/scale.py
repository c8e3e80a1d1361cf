"""Scale: memory of all simulation processes and per-round time as the population grows.

Taken from the overhead runs (10, 100 and 1000 virtual clients, 10 sampled per round,
the same data per client): the peak total RSS and PSS of every process under the
SuperLink (SuperLink, SuperExec, simulation process, Ray, actors), sampled once a
second, and the steady-state round time. PSS counts shared pages once; RSS counts them
in every process that maps them.
"""

from __future__ import annotations

from typing import Any


def summarize(overhead: dict[str, Any]) -> dict[str, Any]:
    rows = []
    # One population sweep: the configs with the most common number of local epochs.
    epochs = [c.get("epochs") for c in overhead.get("configs", [])]
    sweep_epochs = max(set(epochs), key=epochs.count) if epochs else None
    for cfg in overhead.get("configs", []):
        if cfg.get("epochs") != sweep_epochs:
            continue
        if "error" in cfg:
            rows.append({"model": cfg["model"], "nodes": cfg["nodes"], "error": cfg["error"][:300]})
            continue
        rows.append(
            {
                "model": cfg["model"],
                "epochs": cfg["epochs"],
                "nodes": cfg["nodes"],
                "per_round": cfg["per_round"],
                "sim_steady_s": cfg["sim_steady_s"],
                "rss_mib": cfg["peak_memory"]["rss_mib"],
                "pss_mib": cfg["peak_memory"]["pss_mib"],
                "processes": cfg["peak_memory"]["processes"],
            }
        )
    flatness = {}
    for model in sorted({r["model"] for r in rows if "error" not in r}):
        ok = sorted((r for r in rows if r["model"] == model and "error" not in r), key=lambda r: r["nodes"])
        if len(ok) >= 2:
            flatness[model] = {
                "nodes": [ok[0]["nodes"], ok[-1]["nodes"]],
                "round_time_ratio": ok[-1]["sim_steady_s"] / ok[0]["sim_steady_s"],
                "rss_ratio": ok[-1]["rss_mib"] / ok[0]["rss_mib"],
            }
    return {"rows": rows, "largest_vs_smallest": flatness}
