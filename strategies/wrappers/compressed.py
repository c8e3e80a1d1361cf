"""Update compression as a wrapper around any strategy, with bytes counted both ways.

- 8-bit quantization per tensor (Jacob et al. 2018, arXiv:1712.05877):
  ``q = clip(round(x / s) + z, 0, 255)`` with ``s = (max - min) / 255``,
  ``z = round(-min / s)``; the server reconstructs ``(q - z) * s``, within ``s / 2``
  of ``x`` per element.
- Top-k sparsification with client-side error feedback (Stich et al. 2018,
  "Sparsified SGD with Memory", arXiv:1809.07599): each layer sends the
  ``k = round(f * size)`` entries of largest magnitude of ``update + residual`` and
  keeps the rest as the next round's residual.

The math and the wire format are in :mod:`strategies.numeric.compression`; the client half is
``client_app/compression.py``.

Design
------
:class:`CompressedStrategy` holds the inner strategy and implements the four
Message-API hooks by delegating to it:

- ``configure_train``: the inner's messages, with ``compression`` (and
  ``topk-fraction``) added to each one's config; the global model sent to each node
  is remembered for decoding.
- replies, through the reply-transform hook (``strategies.core.protocol``): the wrapper
  registers :meth:`CompressedStrategy.transform_replies` with the inner strategy once;
  where the inner validates train replies, every compressed reply is first decoded into
  an ordinary full-model reply (``global + decoded update``, same metadata and metrics),
  so reply validation and every aggregation rule (FedAvg, robust rules, server
  optimizers, DP) run unchanged. Only floating layers travel
  compressed; integer buffers (BatchNorm's ``num_batches_tracked``) are not sent, and
  the decoded reply carries the global model's values for them, so every array of the
  model is there with its dtype and shape. A reply whose compressed payload is malformed
  (any field of the wrong dtype, shape or range, checked before decoding) never raises:
  the transform reports it as rejected, and the inner's round ledger counts it in
  ``stats.rejected`` under ``malformed-compressed`` and logs it with the node id, as it
  counts invalid replies (not as a failed node); nobody aggregates it.
  A reply that carries a plain model (a client that ignores compression) is passed on as is.
- ``configure_evaluate`` / ``aggregate_evaluate``: the inner's, with bytes counted.

``start`` is :class:`strategies.wrappers.base.StrategyWrapper`'s: the round driver over
*this* object, so the loop calls the wrapper's hooks (``start_round`` is honoured for
resume). The inner strategy's own ``start`` is therefore not used: wrapping a strategy
whose ``start`` does more than the round loop would lose that (FedBuff's asynchronous
loop: the registry refuses compression with fedbuff). Wrapping the grid instead (so the
inner's ``start`` runs) was the alternative; it hides the transformation in transport
code, so the hooks are wrapped.

Composition with DP: ``CompressedStrategy(DPFedAvg(...))`` is supported (what
``with_compression`` builds): updates are decoded before DP clips them, so DP's
guarantee covers the decoded updates exactly as it covers plain ones. DP around
compression is refused by DP (it would bypass this wrapper's hooks).

The global model is broadcast in full precision: quantizing it would make the clients'
reference model differ from the server's. ``stats``, ``nodes``, ``state_dict`` /
``load_state_dict`` / ``check_state`` are the inner's, forwarded by the wrapper base (the
wrapper has no state of its own to checkpoint).

Bytes
-----
:meth:`CompressedStrategy.round_metrics` adds, per round, the serialized array payloads
(``len(Array.data)``: the ``.npy`` bytes, header included; Flower's protobuf framing
is not counted): ``bytes_down`` (every train and evaluate message the server sends),
``bytes_up`` (every reply received, compressed or not, malformed included), and
``bytes_up_uncompressed`` (what the same train replies would have cost as full models).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.app.message import make_message  # Flower's typed Message-from-metadata (its SuperLink's)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from strategies.core.protocol import EdgeStrategy, require_edge_strategy
from strategies.core.records import ARRAYS_KEY, CONFIG_KEY, array_view, from_layers
from strategies.core.reply_checks import MALFORMED_COMPRESSED, Rejection
from strategies.numeric.compression import (
    COMPRESSED_KEY,
    COMPRESSION_KEY,
    SCHEMES,
    TOPK_FRACTION_KEY,
    decode_update,
)
from strategies.wrappers.base import StrategyWrapper
from tasks.config import AppConfig, Section, declare, in_range, one_of


@dataclass(frozen=True)
class CompressionConfig(Section):
    """Keys of the compression wrapper, around any strategy (README "Update compression")."""

    compression: str = declare(
        "none",
        "client updates sent as: none (the model), int8 (quantized) or topk (sparsified)",
        one_of(*SCHEMES),
    )
    topk_fraction: float = declare(
        0.01,
        "share of each layer's entries top-k sends (compression='topk')",
        in_range(0, 1, lo_open=True),
    )


def record_bytes(content: RecordDict) -> int:
    """Serialized array payload of a message: ``len(Array.data)`` over all its array records."""
    return sum(len(array.data) for record in content.array_records.values() for array in record.values())


@dataclass
class RoundTraffic:
    """Bytes of array payload one round moved (see the module docstring)."""

    bytes_down: int = 0
    bytes_up: int = 0
    bytes_up_uncompressed: int = 0


@dataclass(frozen=True)
class _SentModel:
    """The global model as sent to a node: what its reply's update is relative to."""

    names: list[str]
    layers: list[np.ndarray]
    spec: dict[str, tuple[tuple[int, ...], np.dtype]]
    nbytes: int


class CompressedStrategy(StrategyWrapper[EdgeStrategy]):
    """Clients send compressed updates; the inner strategy aggregates full-model replies.

    Parameters
    ----------
    inner : Strategy
        Any strategy built by the registry (FedAvg-based or a wrapper such as DP-FedAvg).
    scheme : str
        ``int8``, ``topk`` or ``none`` (``compression``). ``none`` sends nothing new to
        clients and only counts bytes.
    topk_fraction : float, default 0.01
        f in (0, 1] (``topk-fraction``): share of each layer's entries top-k sends.

    Raises
    ------
    ValueError
        Naming the run-config key of an invalid parameter.
    """

    def __init__(self, inner: EdgeStrategy, *, scheme: str, topk_fraction: float = 0.01) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"compression={scheme!r} is invalid: must be one of {', '.join(SCHEMES)}")
        if not (isinstance(topk_fraction, int | float) and 0 < topk_fraction <= 1):
            raise ValueError(f"topk-fraction={topk_fraction!r} is invalid: must be in (0, 1]")
        self.inner = inner
        self.scheme = scheme
        self.topk_fraction = float(topk_fraction)
        self.traffic: dict[int, RoundTraffic] = {}
        self._sent: dict[int, dict[int, _SentModel]] = {}
        inner.add_reply_transform(self.transform_replies)

    # ------------------------------------------------------------ metrics
    def round_metrics(self, server_round: int) -> dict[str, Any]:
        """The inner's per-round metrics (if any) and this round's bytes down and up."""
        metrics = super().round_metrics(server_round)
        traffic = self.traffic.get(server_round, RoundTraffic())
        metrics.update(
            bytes_down=traffic.bytes_down,
            bytes_up=traffic.bytes_up,
            bytes_up_uncompressed=traffic.bytes_up_uncompressed,
        )
        return metrics

    def summary(self) -> None:
        detail = f", top-k fraction {self.topk_fraction:g}" if self.scheme == "topk" else ""
        log(
            INFO, "\t├──> Update compression: %s%s (global model sent in full precision)", self.scheme, detail
        )
        self.inner.summary()

    # ------------------------------------------------------------------ training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        traffic = self.traffic.setdefault(server_round, RoundTraffic())
        sent: dict[int, _SentModel] = {}
        by_record: dict[int, _SentModel] = {}  # replies usually share one global record
        for msg in messages:
            if self.scheme != "none":
                # A new record per message: the inner may share one config object between them.
                node_config = dict(msg.content.config_records.get(CONFIG_KEY, ConfigRecord()))
                node_config[COMPRESSION_KEY] = self.scheme
                node_config[TOPK_FRACTION_KEY] = self.topk_fraction
                msg.content[CONFIG_KEY] = ConfigRecord(node_config)
            traffic.bytes_down += record_bytes(msg.content)
            record = msg.content.array_records.get(ARRAYS_KEY)
            if record is not None:
                if id(record) not in by_record:
                    by_record[id(record)] = _sent_model(record)
                sent[msg.metadata.dst_node_id] = by_record[id(record)]
        self._sent[server_round] = sent
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # The inner decodes through transform_replies (registered with it) as it validates.
        try:
            return self.inner.aggregate_train(server_round, replies)
        finally:
            self._sent.pop(server_round, None)

    def decode_replies(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[list[Message], list[tuple[int, Rejection]]]:
        """Full-model replies, and the nodes whose payload was malformed (each an error reply).

        :meth:`transform_replies` in the shape of a standalone decoder: error replies and
        replies without a compressed update pass through unchanged; a malformed one
        becomes an error reply carrying the reason.
        """
        replies = list(replies)
        out, rejected = self.transform_replies(server_round, replies)
        malformed = [(replies[i].metadata.src_node_id, rejection) for i, rejection in rejected.items()]
        for i, rejection in rejected.items():
            out[i] = make_message(replies[i].metadata, error=Error(code=0, reason=str(rejection)))
        return out, malformed

    def transform_replies(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], dict[int, Rejection]]:
        """The reply transform: each compressed reply decoded; the malformed ones by index.

        Counts every reply's bytes. Error replies and replies without a compressed update
        pass through unchanged; a malformed one is passed through as received and reported
        in the returned mapping (index → ``malformed-compressed`` rejection), so the inner's
        ledger counts it as rejected.
        """
        traffic = self.traffic.setdefault(server_round, RoundTraffic())
        sent = self._sent.get(server_round, {})
        out: list[Message] = []
        malformed: dict[int, Rejection] = {}
        for i, msg in enumerate(replies):
            if msg.has_error():
                out.append(msg)
                continue
            node = msg.metadata.src_node_id
            received = record_bytes(msg.content)
            traffic.bytes_up += received
            if COMPRESSED_KEY not in msg.content.array_records:  # a plain model (or nothing)
                traffic.bytes_up_uncompressed += received
                out.append(msg)
                continue
            model = sent.get(node)
            if model is not None:
                traffic.bytes_up_uncompressed += model.nbytes
            try:
                out.append(self._decode(msg, model))
            except Exception as exc:  # one client's bytes must never end the run
                # The decoders check every field first and raise ValueError only; anything
                # else is a gap in those checks, still a malformed reply, named as such.
                detail = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                malformed[i] = Rejection(MALFORMED_COMPRESSED, detail)
                out.append(msg)
        return out, malformed

    def _decode(self, msg: Message, model: _SentModel | None) -> Message:
        """``msg`` with its compressed update replaced by ``global + update``; ValueError if malformed."""
        if self.scheme == "none":
            raise ValueError("the reply carries a compressed update, but compression='none'")
        if model is None:
            raise ValueError("no global model was sent to this node this round")
        if ARRAYS_KEY in msg.content.array_records:
            raise ValueError(f"the reply carries both {ARRAYS_KEY!r} and {COMPRESSED_KEY!r}")
        encoded = {key: array_view(array) for key, array in msg.content.array_records[COMPRESSED_KEY].items()}
        deltas = decode_update(encoded, model.spec, scheme=self.scheme, topk_fraction=self.topk_fraction)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite sums are rejected by validation
            # Integer buffers are not sent (compression.is_compressed): the global's values.
            layers = [
                g + deltas[n] if n in deltas else g for n, g in zip(model.names, model.layers, strict=True)
            ]
        content = RecordDict({ARRAYS_KEY: from_layers(model.names, layers)})
        for key, record in msg.content.items():
            if key != COMPRESSED_KEY:
                content[key] = record
        return make_message(msg.metadata, content=content)

    # ---------------------------------------------------------------- evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        traffic = self.traffic.setdefault(server_round, RoundTraffic())
        traffic.bytes_down += sum(record_bytes(m.content) for m in messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        traffic = self.traffic.setdefault(server_round, RoundTraffic())
        traffic.bytes_up += sum(record_bytes(m.content) for m in replies if not m.has_error())
        return self.inner.aggregate_evaluate(server_round, replies)


def _sent_model(record: ArrayRecord) -> _SentModel:
    names = list(record.keys())
    layers = [array_view(record[n]) for n in names]
    spec = {n: (tuple(a.shape), a.dtype) for n, a in zip(names, layers, strict=True)}
    return _SentModel(names, layers, spec, record_bytes(RecordDict({ARRAYS_KEY: record})))


def with_compression(cfg: AppConfig, strategy: Strategy) -> Strategy:
    """``strategy`` wrapped in :class:`CompressedStrategy` unless ``compression='none'``."""
    own = cfg.section(CompressionConfig)
    if own.compression == "none":
        return strategy
    # The wrapper registers its reply transform with the inner: a plug-in must be an EdgeStrategy.
    inner = require_edge_strategy(strategy, cfg.strategy)
    return CompressedStrategy(inner, scheme=own.compression, topk_fraction=own.topk_fraction)
