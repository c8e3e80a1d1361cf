"""One round ledger: what a round's replies were, decided by a pure function, recorded in one object.

Every strategy accounts for its replies the same way, in two steps:

1. :func:`validate_train_replies` (pure: no logging, no state) sorts a batch of train
   replies into a :class:`TrainValidation`: the valid replies with their decoded layers
   (in content order), the *rejections* (a node answered, but its reply was dropped:
   wrong identity, malformed, non-finite, ... with a named reason code from
   ``strategies.core.reply_checks``) and the *failures* (a node was sent work and
   returned no usable answer: an error reply or no reply at all).
2. :meth:`RoundStats.record` adds that outcome to the round's counts and logs each
   rejection and failure with its node id. It only ever *adds*: FedAvg records one
   batch per round, FedBuff one reply at a time into the round the buffer is filling,
   and nothing saves and restores counts around a call.

A reply a wrapper has already judged (a compressed payload that does not decode) enters
step 1 as a *pre-rejection*: it is counted as rejected, with the wrapper's reason, like
any other invalid reply, not as a failed node.

:class:`RoundStats` is the ledger object (its name is kept: the ServerApp, reports and
checkpoints read it). The one place a round is finished for every strategy (nodes'
reports, train loss, DP-SGD ε, attackers) is :meth:`strategies.algorithms.fedavg.FedAvg.finish_round`,
which writes through :meth:`RoundStats.finish`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from logging import WARNING

import numpy as np
from flwr.app import Message
from flwr.supercore import log

from strategies.core.records import ARRAYS_KEY, DP_SGD_EPSILON_KEY, METRICS_KEY, NUM_EXAMPLES
from strategies.core.reply_checks import ArraySpec, Rejection
from strategies.core.reply_identity import ReplyHeader, Sent, match_replies
from strategies.core.validation import validate_train_reply
from tasks import wire


@dataclass(frozen=True)
class NodeReport:
    """What a node said about itself in its last train reply."""

    device: str
    num_examples: int
    train_seconds: float
    #: Simulated attacks only: the node's partition and whether it attacked.
    partition: int | None = None
    num_partitions: int | None = None
    attacker: bool = False
    #: Where its ClientApp ran in simulation (``ray:<node id>``), "" when not reported.
    worker: str = ""


@dataclass(frozen=True)
class Failure:
    """A node sent work that returned nothing usable: an error reply (``reason``) or no reply."""

    node: int
    reason: str | None  # None: no reply (timeout or node lost)


@dataclass(frozen=True)
class TrainValidation:
    """The outcome of one batch of train replies (see the module docstring)."""

    valid: list[Message]
    layers: list[list[np.ndarray]]
    names: list[str]
    rejections: list[tuple[int, Rejection]]
    failures: list[Failure]


@dataclass
class RoundStats:
    """The round ledger: participation in one round, as reported in the round log and metrics.json."""

    sampled: int = 0
    succeeded: int = 0
    failed: int = 0
    dropped: int = 0  # stragglers a strategy chose not to aggregate
    eval_sampled: int = 0
    eval_succeeded: int = 0
    failed_nodes: list[int] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # reason → count (train and evaluate)
    kept_previous_model: bool = False
    train_loss: float | None = None
    federated_loss: float | None = None
    federated_accuracy: float | None = None
    #: Fused evaluation (run config ``fused-evaluate``): this round's train replies evaluated
    #: the model they received, round r − 1's (``strategies/core/fused.py``). Sampled: the
    #: nodes sent train messages; succeeded: those whose evaluation counted.
    fused_eval_sampled: int = 0
    fused_eval_succeeded: int = 0
    fused_federated_loss: float | None = None
    fused_federated_accuracy: float | None = None
    #: Where the round's time went, in seconds (metrics.json ``phases``; not checkpointed
    #: state, only a report): ``train_stage`` from the train messages to their replies'
    #: validation, ``aggregate`` the validation and the rule, ``evaluate_stage`` the same
    #: for evaluation, ``client_handler`` / ``client_train`` the sums over the round's
    #: replies of their handler time and training time, ``dispatch_first`` / ``return_last``
    #: the engine's wait before the first and after the last handler of each stage
    #: (``strategies/core/phases.py``).
    phases: dict[str, float] = field(default_factory=dict)
    #: Largest ε reported by DP-SGD clients this round (sample-level DP), if any.
    dp_sgd_epsilon: float | None = None
    #: Each DP-SGD node's own ε this round (node id → ε over all its rounds so far).
    dp_sgd_epsilon_by_node: dict[int, float] = field(default_factory=dict)
    #: Accepted replies from simulated attackers (run config ``attack``), if any attacked.
    attackers: int = 0
    #: Accepted train replies per simulation worker (``ray:<node id>``), when reported:
    #: where the round's work ran on a Ray cluster (docs/scaling.md). One entry per
    #: worker, never per node, so it does not grow with the population.
    workers: dict[str, int] = field(default_factory=dict)
    #: Training examples of the aggregated replies (their ``num-examples``), for per-example costs.
    train_examples: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    # ----------------------------------------------------------------- recording
    def reject(self, node: int, stage: str, rejection: Rejection) -> None:
        """Count (and log) one dropped reply under its reason."""
        log(WARNING, "%s: dropped reply from node %d: %s", stage, node, rejection)
        self.rejected[rejection.reason] = self.rejected.get(rejection.reason, 0) + 1

    def fail(self, node: int) -> None:
        """Count one node that was sent work and returned nothing usable."""
        self.failed_nodes.append(int(node))
        self.failed = len(self.failed_nodes)

    def record(self, outcome: TrainValidation, stage: str = "train") -> None:
        """Add one batch's outcome to the round: succeeded, rejected (by reason), failed nodes."""
        for node, rejection in outcome.rejections:
            self.reject(node, stage, rejection)
        silent = [f.node for f in outcome.failures if f.reason is None]
        for failure in outcome.failures:
            if failure.reason is not None:
                log(WARNING, "%s: node %d failed: %s", stage, failure.node, failure.reason)
        if silent:
            log(WARNING, "%s: no reply from node(s) %s (timeout or node lost)", stage, silent)
        for failure in outcome.failures:
            self.fail(failure.node)
        self.succeeded += len(outcome.valid)

    def keep_previous_model(self, server_round: int, reason: str) -> None:
        """The round releases no model: log why and mark it (the global model stays)."""
        log(WARNING, "aggregate_train: round %d keeps the previous model: %s", server_round, reason)
        self.kept_previous_model = True

    def finish(
        self, valid: Sequence[Message], nodes: Mapping[int, NodeReport], train_loss: float | None
    ) -> None:
        """The round's figures from its aggregated replies: loss, examples, DP-SGD ε, attackers, workers."""
        self.attackers = sum(nodes[m.metadata.src_node_id].attacker for m in valid)
        self.train_examples = sum(nodes[m.metadata.src_node_id].num_examples for m in valid)
        self.workers = {}
        for m in valid:
            worker = nodes[m.metadata.src_node_id].worker
            if worker:
                self.workers[worker] = self.workers.get(worker, 0) + 1
        self.train_loss = train_loss
        self.dp_sgd_epsilon = max_client_epsilon(valid)
        self.dp_sgd_epsilon_by_node = client_epsilons(valid)


#: Alias naming the role: the one object that records a round's counts.
RoundLedger = RoundStats


def header(msg: Message) -> ReplyHeader:
    """The identity fields of a reply (``strategies.core.reply_identity``)."""
    meta = msg.metadata
    return ReplyHeader(meta.reply_to_message_id, meta.src_node_id, meta.message_type, msg.has_error())


def split_replies(
    replies: Sequence[Message],
    *,
    sent: Sequence[Message] | None,
    stage: str,
    pre_rejected: Mapping[int, Rejection] | None = None,
) -> tuple[list[Message], list[tuple[int, Rejection]], list[Failure]]:
    """Replies that belong to the round and carry no error; rejections; failures. Pure.

    Each reply is matched to the message it answers: duplicates, replies from nodes not
    sampled, replies of another stage and replies to unknown messages are rejected. An
    error is a failure of the node the message went to (an error the SuperLink writes for
    a lost node carries the SuperLink's id as its source). A node sent work that returned
    no good reply is a failure too (``reason`` None when it never answered). A matched
    reply whose index is in ``pre_rejected`` is rejected with that reason (it answered: it
    is not a failure). ``sent`` None (a strategy driven without ``configure_*``, in unit
    use): no identity to check, the error replies are the failures.
    """
    pre_rejected = pre_rejected or {}
    if sent is None:
        good, rejections, failures = [], [], []
        for i, msg in enumerate(replies):
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                failures.append(Failure(node, str(msg.error.reason)))
            elif i in pre_rejected:
                rejections.append((node, pre_rejected[i]))
            else:
                good.append(msg)
        return good, rejections, failures
    matches = match_replies(
        [Sent(m.metadata.message_id, m.metadata.dst_node_id) for m in sent],
        [header(m) for m in replies],
        message_type=stage,
    )
    good, rejections, failures = [], [], []
    answered_ok: set[int] = set()
    errors: dict[int, str] = {}
    for i, (msg, match) in enumerate(zip(replies, matches, strict=True)):
        if match.rejection is not None:
            rejections.append((int(msg.metadata.src_node_id), match.rejection))
            continue
        matched = match.node
        assert matched is not None  # Match: a reply matched to a sent message always names its node
        if msg.has_error():
            errors.setdefault(int(matched), str(msg.error.reason))
        elif i in pre_rejected:
            rejections.append((int(matched), pre_rejected[i]))
            answered_ok.add(int(matched))
        else:
            good.append(msg)
            answered_ok.add(int(msg.metadata.src_node_id))
    for node in (int(m.metadata.dst_node_id) for m in sent):
        if node not in answered_ok:
            failures.append(Failure(node, errors.get(node)))
    return good, rejections, failures


def validate_train_replies(
    replies: Iterable[Message],
    *,
    sent: Sequence[Message] | None,
    spec: ArraySpec | None,
    max_num_examples: int,
    pre_rejected: Mapping[int, Rejection] | None = None,
) -> TrainValidation:
    """Sort one batch of train replies into valid, rejected and failed. Pure (no logs, no state).

    Parameters
    ----------
    replies : iterable of Message
        The replies received.
    sent : sequence of Message or None
        The messages they answer (None: unit use without ``configure_train``).
    spec : ArraySpec or None
        The global model's names, shapes and dtypes (None: the first reply's are trusted).
    max_num_examples : int
        Upper bound on a reply's ``num-examples``.
    pre_rejected : mapping of int to Rejection, optional
        Index of a reply in ``replies`` → why a wrapper already dropped it.

    Returns
    -------
    TrainValidation
        Valid replies and their layers in content order (:func:`reply_digest`), so float
        sums do not depend on arrival order; the model's array names; rejections; failures.
    """
    replies = list(replies)
    good, rejections, failures = split_replies(replies, sent=sent, stage="train", pre_rejected=pre_rejected)
    names = list(spec) if spec is not None else []
    valid, layers = [], []
    for msg in good:
        if spec is None:  # unit use: trust the first reply's names
            record = msg.content.array_records[ARRAYS_KEY]
            spec = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in record.items()}
            names = list(spec)
        arrays, rejection = validate_train_reply(msg.content, spec, max_num_examples=max_num_examples)
        if rejection is not None:
            rejections.append((int(msg.metadata.src_node_id), rejection))
            continue
        valid.append(msg)
        layers.append([arrays[n] for n in names])
    # Arrival order depends on timing and node ids are random per run: order by content,
    # so float sums (and thus a resumed run) are reproducible bit for bit.
    order = sorted(range(len(valid)), key=lambda i: reply_digest(valid[i], layers[i]))
    return TrainValidation([valid[i] for i in order], [layers[i] for i in order], names, rejections, failures)


class ContentKey:
    """Orders replies by content: num-examples, then a digest of the smallest parameter, then of everything.

    Two replies compare equal only when their models are identical (same bytes, dtypes and
    shapes in the model's order), and then their order cannot change any sum, so every
    strategy is bit-reproducible whatever order the replies arrived in. Hashing every
    array of every reply costs a few ms per MB-sized model (BLAKE2b reads about 1 GB/s),
    more than the aggregation itself, so the full digest is computed lazily: only for
    replies that tie on (num-examples, digest of the smallest floating-point array), which
    distinct clients practically never do. Integer buffers stay out of the cheap digest:
    BatchNorm's 0-d counter, shared by most clients, used to be "the smallest array" and
    left float sums to arrival order. Metrics stay out: ``train-seconds`` differs between
    runs and would make the order, and so a resumed run, depend on timing.
    """

    __slots__ = ("_full", "_layers", "quick")

    def __init__(self, num_examples: float, layers: Sequence[np.ndarray]) -> None:
        parameters = [a for a in layers if np.issubdtype(a.dtype, np.floating)]
        smallest = min(parameters, key=lambda a: a.nbytes) if parameters else np.empty(0)
        self.quick = (num_examples, _digest([smallest]))
        self._layers = layers
        self._full: bytes | None = None

    @property
    def full(self) -> bytes:
        """The digest of every array (computed once, when a tie needs it)."""
        if self._full is None:
            self._full = _digest(self._layers)
        return self._full

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContentKey):
            return NotImplemented
        return self.quick == other.quick and self.full == other.full

    def __lt__(self, other: ContentKey) -> bool:
        if self.quick != other.quick:
            return self.quick < other.quick
        return self.full < other.full

    def __hash__(self) -> int:
        return hash(self.quick)


def _digest(layers: Sequence[np.ndarray]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for layer in layers:
        digest.update(f"{layer.dtype.str}{layer.shape}".encode())
        # ``.data`` is the array's own buffer (no copy); numpy's stubs declare ``__buffer__`` only for 3.12+.
        digest.update(np.ascontiguousarray(layer).reshape(-1).view(np.uint8).data)
    return digest.digest()


def reply_digest(msg: Message, layers: Sequence[np.ndarray]) -> ContentKey:
    """The :class:`ContentKey` of a valid train reply and its decoded layers."""
    return ContentKey(wire.as_float(msg.content.metric_records[METRICS_KEY][NUM_EXAMPLES]), layers)


def max_client_epsilon(replies: Sequence[Message]) -> float | None:
    """The largest ``dp-sgd-epsilon`` among valid train replies (each DP-SGD client's own ε)."""
    values = list(client_epsilons(replies).values())
    return max(values) if values else None


def client_epsilons(replies: Sequence[Message]) -> dict[int, float]:
    """Node id → the ``dp-sgd-epsilon`` its valid train reply reported (DP-SGD nodes only)."""
    out = {}
    for m in replies:
        value = m.content[METRICS_KEY].get(DP_SGD_EPSILON_KEY)
        if isinstance(value, int | float):
            out[m.metadata.src_node_id] = float(value)
    return out
