"""Render ``results.json`` as ``BENCHMARKS.md``."""

from __future__ import annotations

from typing import Any


def _f(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "–"
    if isinstance(value, float | int):
        return format(value, spec)
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(results: dict[str, Any]) -> str:
    m = results["machine"]
    loads = "; ".join(
        f"{name} {'/'.join(str(x) for x in load)}" for name, load in results["load_average_samples"]
    )
    rows = [
        ["CPU", m["cpu"]],
        ["cores", m["cores"]],
        ["memory", f"{m['memory_gib']} GiB"],
        ["torch threads", "1 per client (`threads-per-client=1`) in every timed run"],
        [
            "versions",
            f"flwr {m['flwr']}, torch {m['torch']}, numpy {m['numpy']}, ray {m['ray']}, Python {m['python']}",
        ],
        ["OS", m["os"]],
        ["load average (1/5/15 min)", f"start {'/'.join(str(x) for x in m['load_average'])}; {loads}"],
        ["run", f"{results['started']}, {results['mode']} mode, {results['total_seconds'] / 60:.0f} min"],
    ]
    return _table(["", ""], rows)


def overhead(results: dict[str, Any]) -> str:
    o = results["overhead"]
    rows, starts, baselines = [], [], []
    for c in o["configs"]:
        label = f"{c['model']}, {c['nodes']} clients, {c['per_round']}/round, E={c['epochs']}"
        if "error" in c:
            rows.append([label, "failed", "", "", "", c["error"].splitlines()[0][:120]])
            continue
        rows.append(
            [
                label,
                _f(c["plain_steady_s"]),
                _f(c["sim_steady_s"]),
                _f(c["overhead_s"]),
                f"**{c['ratio']:.2f}**",
                _f(c["startup"]["total_s"], ".1f"),
            ]
        )
        s = c["startup"]
        starts.append(
            [
                label,
                "edgebloom",
                _f(s["cli_submit_s"], ".1f"),
                _f(s["serverapp_ready_s"], ".1f"),
                _f(s["first_round_extra_s"], ".1f"),
                f"**{_f(s['total_s'], '.1f')}**",
            ]
        )
        if c.get("baseline") or c.get("before"):
            baselines.append(
                [
                    label,
                    "edgebloom",
                    _f(c["plain_steady_s"]),
                    _f(c["sim_steady_s"]),
                    _f(c["overhead_s"]),
                    f"**{c['ratio']:.2f}**",
                    _f(c["peak_memory"]["rss_mib"], ".0f"),
                ]
            )
        for key, name in (("baseline", "quickstart-style"), ("before", "edgebloom before (6c2c135)")):
            b = c.get(key)
            if not b:
                continue
            if "error" in b:
                baselines.append([label, name, "failed", "", "", b["error"].splitlines()[0][:100]])
                continue
            baselines.append(
                [
                    label,
                    name,
                    _f(c["plain_steady_s"]),
                    _f(b["sim_steady_s"]),
                    _f(b["overhead_s"]),
                    f"**{b['ratio']:.2f}**",
                    _f(b["peak_memory"]["rss_mib"], ".0f"),
                ]
            )
            bs = b["startup"]
            starts.append(
                [
                    label,
                    name,
                    _f(bs["cli_submit_s"], ".1f"),
                    _f(bs["serverapp_ready_s"], ".1f"),
                    _f(bs["first_round_extra_s"], ".1f"),
                    f"**{_f(bs['total_s'], '.1f')}**",
                ]
            )
    parts = [
        _table(
            [
                "config",
                "plain PyTorch s/round",
                "Flower simulation s/round",
                "overhead s/round",
                "ratio",
                "fixed start-up s",
            ],
            rows,
        ),
        "",
        "Fixed start-up, from `flwr run` to the end of round 1 minus one steady round: the CLI building and "
        "submitting the app; the simulation process starting, installing the app and the ServerApp loading "
        "its data and model (until Flower logs `[ROUND 1/`); and round 1's extra time over a steady round "
        "(Ray start, actor start, imports in the actor, first data load, first torch call). "
        "`flwr run`'s FAB build walks every file under the project directory before it applies "
        "`fab-include`, so a virtual environment inside the project (`.venv/`, as README's install "
        "creates it) costs seconds of CLI time: about 4 s for a 6 GB torch environment here "
        "(`flwr build` 5.0 s with it, the quickstart-style app beside it 0.8 s).",
        "",
        _table(
            ["config", "app", "CLI + submit s", "ServerApp ready s", "round 1 extra s", "total s"], starts
        ),
    ]
    if baselines:
        parts += [
            "",
            "The same rounds with a quickstart-style client that reloads its data and rebuilds its model on "
            "every call (`bench/baseline_app`), and with edgebloom as it was before this benchmark "
            "(where measured), against the same plain-PyTorch reference:",
            "",
            _table(
                [
                    "config",
                    "app",
                    "plain s/round",
                    "simulation s/round",
                    "overhead s/round",
                    "ratio",
                    "peak RSS MiB",
                ],
                baselines,
            ),
        ]
    return "\n".join(parts)


def aggregation(results: dict[str, Any]) -> str:
    a = results["aggregation"]
    kernel_rows, strategy_rows = [], []
    for r in a["rows"]:
        if "skipped" in r:
            strategy_rows.append([r["name"], r["k"], "not measured", "", "", r["skipped"]])
            continue
        cells = [
            r["name"],
            r["k"],
            _f(r["seconds"] * 1000, ".1f"),
            f"**{r['ratio_to_floor']:.2f}**",
            _f(r["peak_extra_mib"], ".0f"),
            _f(r["peak_extra_models"], ".2f"),
        ]
        (kernel_rows if r["kind"] == "kernel" else strategy_rows).append(cells)
    head = ["", "K", "ms", "× floor", "peak extra MiB", "extra (models)"]
    return "\n".join(
        [
            f"Model: MNIST CNN, {a['params']:,} float32 parameters ({a['model_mib']:.2f} MiB). Measured copy "
            f"bandwidth {a['copy_bandwidth_gib_s']:.1f} GiB/s; floor = K × model bytes ÷ copy bandwidth. K > "
            f"{a['distinct_payloads']} reuses {a['distinct_payloads']} distinct payloads "
            "(still far beyond the caches).",
            "",
            "Kernel (K reply records in, one aggregated `ArrayRecord` out):",
            "",
            _table(head, kernel_rows),
            "",
            "Each registered strategy's whole `aggregate_train` (reply validation, its rule, metrics), "
            "on the replies of the nodes its `configure_train` sampled:",
            "",
            _table(["strategy", "K", "ms", "× floor", "peak extra MiB", "extra (models)"], strategy_rows),
        ]
    )


def scale(results: dict[str, Any]) -> str:
    s = results["scale"]
    rows = []
    for r in s["rows"]:
        if "error" in r:
            rows.append([r["model"], r["nodes"], "failed", "", "", ""])
            continue
        rows.append(
            [
                r["model"],
                r["nodes"],
                _f(r["sim_steady_s"]),
                _f(r["rss_mib"], ".0f"),
                _f(r["pss_mib"], ".0f"),
                r["processes"],
            ]
        )
    flat = [
        f"- {m}: {v['nodes'][1]} vs {v['nodes'][0]} clients: round time × {v['round_time_ratio']:.2f}, "
        f"RSS × {v['rss_ratio']:.2f}"
        for m, v in s["largest_vs_smallest"].items()
    ]
    per_client = results["overhead"].get("examples_per_client")
    note = (
        f"Each client holds {per_client} examples, so the data file grows with the population (1000 "
        f"clients: {per_client * 1000:,} images); the server and the actor each load all of it. RSS counts "
        "pages shared between processes once per process; PSS splits them."
    )
    return "\n".join(
        [
            note,
            "",
            _table(
                [
                    "model",
                    "virtual clients",
                    "s/round (10 sampled)",
                    "peak RSS MiB (all processes)",
                    "peak PSS MiB",
                    "processes",
                ],
                rows,
            ),
            "",
            *flat,
        ]
    )


def efficiency(results: dict[str, Any]) -> str:
    e = results["efficiency"]
    rows = []
    for r in e["rows"]:
        if "error" in r:
            rows.append([r["name"], r["target"], "failed", "", "", "", ""])
            continue
        rows.append(
            [
                r["name"],
                r["target"],
                _f(r["rounds_to_target"], "d") if r["rounds_to_target"] else f"not in {len(r['accuracy'])}",
                _f(r["seconds_to_target"], ".1f"),
                _f(r["best_accuracy"], ".3f"),
                _f(r["final_accuracy"], ".3f"),
                _f(r["total_round_seconds"], ".1f"),
            ]
        )
    return "\n".join(
        [
            _table(
                [
                    "run",
                    "target acc",
                    "rounds to target",
                    "s to target",
                    "best acc",
                    "final acc",
                    "s all rounds",
                ],
                rows,
            ),
            "",
            f"![accuracy per round](bench/results/{e['plot']})",
        ]
    )


PROFILE_NOTES = """\
Where the time went, from a py-spy profile (`py-spy record --subprocesses`, 50 Hz, 20 s) of
steady rounds of the MNIST CNN, 100 clients, 10 per round, E=1, one actor, taken before the
changes below (sample shares of the actor's busy time; the profiler itself slows the rounds):

- training (`TorchClient.fit` → `tasks.train.train`): 68%;
- serializing the reply (`from_layers` → Flower's `Array(ndarray)` → `np.save` into a
  `BytesIO`): 13%;
- reading the received model (`to_layers` → `array_view`): 5%. `array_view` was meant to be
  zero-copy, but `io.BytesIO(memoryview)` copies the whole payload, and NumPy parses every
  `.npy` header with `ast.literal_eval`;
- Ray pickling the reply: 4%; building a new model for every partition seen the first time: 4%.

The same profile after the changes: training 84% of the actor's busy time, evaluation 6%,
Ray pickling 3%; the record conversions no longer show. What remains of the overhead is in
Flower's engine: Ray submitting each message (pickling the 6.35 MiB model per message) and
the polling below.

In the simulation process, Flower's engine polls: the ServerApp's `InMemoryGrid` pulls
replies every 0.1 s, and the message extractor walks every virtual node every 0.1 s
(`vce_api.add_messages_to_queue`, one `get_message_ins` per node): fixed per-round costs
outside the app.

What changed:

1. `strategies/numeric/aggregate.py`: `weighted_average` accumulates with BLAS axpy
   (`scipy.linalg.blas.saxpy`/`daxpy`) straight from the read-only reply views, in 128K-element
   blocks so the accumulator block stays in L2 while every reply streams past it once; the
   only memory written is the output. Before: multiply each reply into a temporary, then add.
2. `strategies/core/records.py`: `array_view` copies only the header bytes and caches parsed
   headers (a round's replies repeat the model's headers), so it is zero-copy now;
   `from_layers` writes `.npy` bytes with one copy (`npy_array`) instead of `np.save`'s three
   (same bytes as `Array(ndarray)`; it also keeps 0-d arrays 0-d).
3. `client_app/app.py`: the virtual nodes of a worker share one model object per
   architecture (every call overwrites all parameters and buffers first); a model per
   partition held, with 1000 virtual nodes, up to 1000 copies of the weights and gradients
   (12.7 MiB each for the MNIST CNN) in every actor.
4. `strategies/wrappers/dp_fedavg.py`, `strategies/numeric/dp.py`: DP-FedAvg kept every client's
   float64 update next to its clipped copy, and the weighted sum stacked all clients per
   layer: 63 models of extra memory at K = 10 (6 per client), so K = 100 was predicted at
   3.9 GiB and not run. Clients are now clipped one at a time and the sum accumulates in
   place: 28 models at K = 10 (the clipped float64 updates, 2 per client), 1.3 GiB at
   K = 100, and faster (0.31 s → 0.21 s at K = 10, before and after measured back to back on one
   machine; same float64 math).

The "edgebloom before (6c2c135)" rows are the commit before these changes, run in the same
benchmark run (`--compare-app`, a `git archive` of it)."""


def render(results: dict[str, Any]) -> str:
    parts = [
        "# Benchmarks",
        "",
        "Written by `python -m bench` (results: `bench/results/results.json`). Every figure is a ratio or a "
        "time taken in this one run on this one machine, which is shared with other jobs: compare rows "
        "with each other, not with another run.",
        "",
        "## Machine",
        "",
        machine(results),
    ]
    if "overhead" in results:
        parts += ["", "## Simulation overhead", "", stamp(results["overhead"]) + overhead(results)]
    if "aggregation" in results:
        parts += ["", "## Aggregation", "", stamp(results["aggregation"]) + aggregation(results)]
    if "scale" in results:
        parts += ["", "## Scale", "", stamp(results["scale"]) + scale(results)]
    if "efficiency" in results:
        parts += [
            "",
            "## Efficiency: rounds and time to a target accuracy",
            "",
            stamp(results["efficiency"]) + efficiency(results),
        ]
    if "async_vs_sync" in results:
        parts += [
            "",
            "## Asynchronous FedBuff against synchronous FedAvg on slow devices",
            "",
            async_vs_sync(results["async_vs_sync"]),
        ]
    if "compression" in results:
        parts += ["", "## Update compression: bytes and accuracy", "", compression(results["compression"])]
    if "secagg" in results:
        parts += ["", "## Secure aggregation", "", stamp(results["secagg"]) + secagg(results["secagg"])]
    parts += ["", "## Profile and optimizations", "", PROFILE_NOTES]
    return "\n".join(parts) + "\n"


def stamp(section: Any) -> str:
    """For a section re-measured alone (``--only ... --update``): when, and on which CPU."""
    if not isinstance(section, dict) or "measured_separately" not in section:
        return ""
    s = section["measured_separately"]
    return (
        f"*Re-measured separately (`python -m bench --only ... --update`), started {s['started']} on "
        f"{s['cpu']}, {s['cores']} cores; its ratios are taken within that run.*\n\n"
    )


def async_vs_sync(result: dict[str, Any]) -> str:
    """The section of ``python -m bench.async_vs_sync``'s ``async_vs_sync.json``."""
    s = result["settings"]
    sigma = f"σ {s['slowdown_sigma']:g}, " if s["slowdown"] == "lognormal" else ""
    return (
        "Run separately (`python -m bench.async_vs_sync`, about 8 minutes; not part of "
        f"`python -m bench`), on {result['date']}: digits, 10 nodes, E = 5, IID, seed {s['seed']}, "
        f"{s['slowdown']} device slowdown ({sigma}max {s['slowdown_max']:g}; the same factors for "
        f"both strategies), FedBuff with concurrency {s['concurrency']} and buffer "
        f"{s['buffer_size']}, target {result['target_accuracy']:.0%} central accuracy, simulation "
        "engine with one Ray actor per node. Round 1 includes the engine's start-up (10 actors "
        'importing PyTorch on shared cores, 50–200 s and noisy), so read the "after round 1" '
        "column. One run per row.\n\n" + result["table"]
    )


def compression(result: dict[str, Any]) -> str:
    """The section of ``python -m bench.compression``'s ``compression.json``."""
    return (
        f"Run separately (`python -m bench.compression`; not part of `python -m bench`): digits, 10 nodes, "
        f"{result['rounds']} rounds, model {result['model_bytes'] / 1e3:.1f} kB.\n\n" + result["table"]
    )


def secagg(result: dict[str, Any]) -> str:
    """The section of ``bench.secagg``: SecAgg+ against plain FedAvg, side by side in one run."""
    rows, growth = [], {}
    for r in result["rows"]:
        plain, secure = r["plain"], r["secagg"]
        pb, sb = plain["bytes_per_client"], secure["bytes_per_client"]
        protocol = sb.get("down_protocol", 0.0) + sb.get("up_protocol", 0.0)
        growth.setdefault(r["model"], []).append((r["clients"], secure["num_shares"], protocol))
        rows.append(
            [
                r["model"],
                r["clients"],
                f"{secure['num_shares']} / {secure['threshold']}",
                _f(plain["steady_s"]),
                _f(secure["steady_s"]),
                f"**{r['time_ratio']:.2f}**",
                _f((secure["steady_s"] - plain["steady_s"]) / r["clients"] * 1e3, ".0f"),
                f"{pb['down'] / 1e3:.1f} / {pb['up'] / 1e3:.1f}",
                f"{sb['down'] / 1e3:.1f} / {sb['up'] / 1e3:.1f}",
                f"**{r['down_ratio']:.2f} / {r['up_ratio']:.2f}**",
                f"{protocol / 1e3:.1f}",
                f"{protocol / secure['num_shares'] / 1e3:.2f}",
            ]
        )
    table = _table(
        [
            "model",
            "K",
            "k / t",
            "plain s/round",
            "SecAgg+ s/round",
            "× time",
            "extra ms/client",
            "plain kB/client (down / up)",
            "SecAgg+ kB/client (down / up)",
            "× bytes (down / up)",
            "protocol kB/client",
            "protocol kB/client ÷ k",
        ],
        rows,
    )
    lines = []
    for model, points in growth.items():
        (k0, s0, p0), (k1, s1, p1) = points[0], points[-1]
        if k1 > k0 and p0 > 0:
            lines.append(
                f"{model}: from K = {k0} to {k1} ({k1 / k0:.0f}× the clients) the protocol bytes per "
                f"client grow {p1 / p0:.2f}×, with the neighbourhood k ({s0} → {s1}, {s1 / s0:.2f}×)"
            )
    growth_text = ("; ".join(lines) + ". ") if lines else ""
    return (
        "`python -m bench --only secagg`: the real ServerApp and ClientApp in one process (the fast "
        "tier's `AppGrid` with a byte meter), plain FedAvg and FedAvg under SecAgg+ run side by side "
        f"on the same random data ({result['examples_per_client']} examples per client, E = 1, "
        "B = 10, every node sampled, one torch thread, clients one after another, no transport). "
        "Times are the median steady round (rounds 2..R); bytes are each message's records "
        "serialized with Flower's protobuf serde (metadata left out), averaged over the clients "
        "and rounds. SecAgg+ neighbourhoods follow Bell et al. 2020: k = 2⌈log2 K⌉ + 1 nodes "
        "(itself and ⌈log2 K⌉ on each side of a ring), threshold t = ⌊k/2⌋ + 1.\n\n"
        + table
        + "\n\nReading the numbers. *Model bytes*: down, each client receives the global model "
        "as in a plain round; up, it sends its masked update, one int64 per parameter where "
        "the plain reply is float32, so the upload of the model part doubles whatever K is. "
        "*Protocol bytes* (public keys, encrypted Shamir shares and their relaying, the "
        "unmask lists and shares) are per client O(k): each node exchanges keys and shares "
        "with its k neighbours only, so the last column stays nearly flat while K grows "
        f"tenfold; {growth_text}In all the server relays O(K·k) = O(K log K) bytes of key "
        "shares, where the original SecAgg (every pair) would be O(K) per client and O(K²) in "
        "all. *Time*: the extra per client (\"extra ms/client\": the secure round minus the "
        "plain one, over K) is O(k) public-key work that does not depend on the model (key "
        "agreement with each neighbour, Shamir splitting and encryption of its shares, and on "
        "the server Shamir combining and checking the shares of each survivor's seed) plus "
        "O(k × model size) mask generation and removal (one pseudo-random vector of the "
        "model's size per neighbour, and one per survivor on the server). Where local training "
        "is cheap (the digits CNN trains a client in milliseconds) the public-key work is most "
        "of the extra, and it grows with k; for the MNIST CNN the masks over 1.66M parameters "
        "add to it, and its longer training dilutes the ratio. Longer local training (E > 1, "
        "more data per client) lowers every ratio. Timings come from a machine shared with "
        "other jobs: a plain round that is slower at a larger K (or a ratio out of line with its "
        "neighbours) is load, not the protocol; compare the two runs of one row."
        + (f"\n\nNot measured: {result['not_measured']}" if result.get("not_measured") else "")
    )
