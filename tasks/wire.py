"""Every key that travels between the ServerApp and the ClientApp, in one place.

Both apps import these names; no other module spells a message key as a string. The
module imports only the standard library (no Flower, no NumPy), so a client, a strategy, a test or a tool
can read the protocol from it alone. Keys are kebab-case, as in Flower's examples.

A train message carries ``RecordDict({ARRAYS: <global model>, CONFIG: <round config>})``;
the reply carries ``{ARRAYS: <new model>}`` (or ``{COMPRESSED: <encoded update>}``),
``{METRICS: {NUM_EXAMPLES, TRAIN_LOSS, TRAIN_SECONDS, ...}}`` and ``{INFO: {DEVICE, ...}}``.
An evaluate message carries the model and a config; its reply ``{METRICS: {NUM_EXAMPLES,
LOSS, ACCURACY}}``. With ``FUSED_EVALUATE`` in the train config, the train reply's metrics
also carry ``FUSED_LOSS``, ``FUSED_ACCURACY`` and ``FUSED_NUM_EXAMPLES``: the received model
evaluated on the node's held-out data before training.
"""

from __future__ import annotations

from typing import SupportsFloat, SupportsIndex, SupportsInt

# --------------------------------------------------------------------- record names
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
INFO = "info"
#: A compressed update in place of ``ARRAYS`` (strategies.wrappers.compressed).
COMPRESSED = "compressed-update"

# ------------------------------------------------- round config (server → client)
SERVER_ROUND = "server-round"
MODEL = "model"
NUM_CLASSES = "num-classes"
LOCAL_EPOCHS = "local-epochs"
BATCH_SIZE = "batch-size"
LEARNING_RATE = "learning-rate"
MOMENTUM = "momentum"
WEIGHT_DECAY = "weight-decay"
PROXIMAL_MU = "proximal-mu"
#: FedBuff: the version of the global model a node trains on.
MODEL_VERSION = "model-version"
#: User-level DP with client clipping: the clipping norm S (strategies.wrappers.dp_fedavg).
CLIP_NORM = "dp-clip-norm"
#: Update compression: the scheme and the top-k fraction.
COMPRESSION = "compression"
TOPK_FRACTION = "topk-fraction"
#: Sample-level DP-SGD on the client (client_app.dpsgd).
DP_SGD_NOISE_MULTIPLIER = "dp-sgd-noise-multiplier"
DP_SGD_MAX_GRAD_NORM = "dp-sgd-max-grad-norm"
DP_SGD_DELTA = "dp-sgd-delta"
DP_SECURE_NOISE = "dp-secure-noise"
#: Simulated slow devices (harness.slowdown).
DEVICE_SLOWDOWN = "device-slowdown"
DEVICE_SLOWDOWN_MAX = "device-slowdown-max"
DEVICE_SLOWDOWN_SIGMA = "device-slowdown-sigma"
DEVICE_SLOWDOWN_SEED = "device-slowdown-seed"
#: Simulated attacks (harness.client_attack).
ATTACK = "attack"
ATTACK_FRACTION = "attack-fraction"
ATTACK_SCALE = "attack-scale"
SEED = "seed"
#: Fused evaluation (run config ``fused-evaluate``): evaluate the received model on the
#: node's held-out data before training, in the same train message.
FUSED_EVALUATE = "fused-evaluate"
#: Simulated nodes lost after SecAgg+ key sharing (harness.dropout).
SECAGG_DROP_AFTER_SHARE_KEYS = "secagg-drop-after-share-keys"

# ------------------------------------------------------ reply metrics (client → server)
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
TRAIN_SECONDS = "train-seconds"
LOSS = "loss"
ACCURACY = "accuracy"
#: DP-FedAvg with client clipping: 1 if the update was within the norm (adaptive clipping).
UNCLIPPED = "dp-unclipped"
#: DP-SGD: the node's ε over its whole history.
DP_SGD_EPSILON = "dp-sgd-epsilon"
#: Seconds the ClientApp's handler took for the message (record conversions and compute;
#: the server's per-round phase timings, metrics.json ``phases``).
HANDLER_SECONDS = "handler-seconds"
SLOWDOWN_FACTOR = "slowdown-factor"
SLOWDOWN_SECONDS = "slowdown-seconds"
#: Fused evaluation: the received (previous round's) global model's loss, accuracy and
#: number of held-out examples, measured before training, in the train reply's metrics.
FUSED_LOSS = "fused-eval-loss"
FUSED_ACCURACY = "fused-eval-accuracy"
FUSED_NUM_EXAMPLES = "fused-eval-num-examples"

# --------------------------------------------------------- reply info (client → server)
DEVICE = "device"
ATTACKER = "attacker"
#: Where the ClientApp ran in simulation: ``ray:<node id>`` on Flower's Ray backend.
WORKER = "worker"

# ------------------------------------------------------ node config (SuperNode → client)
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
DATA_PATH = "data-path"


# ------------------------------------------- secure aggregation (SecAgg+, strategies.wrappers.secagg)
# Flower's own names (flwr.common.secure_aggregation.secaggplus_constants: RECORD_KEY_*, Key,
# Stage) spelled as literals, so this module stays import-light; tests/tasks/test_wire.py
# checks they equal Flower's. Every SecAgg+ stage message is a train message whose content
# carries ``{SECAGG_CONFIGS: {SECAGG_STAGE: <stage>, ...}}``; the collect stage also carries
# the round's ``ARRAYS`` and ``CONFIG``, and its reply ``{SECAGG_MASKED: <masked vector>}``.
#: Config record of every stage message and reply (Flower's ``RECORD_KEY_CONFIGS``).
SECAGG_CONFIGS = "secaggplus_configs"
#: The node's protocol state between stage messages, in ``context.state`` (``RECORD_KEY_STATE``).
SECAGG_STATE = "secaggplus_state"
#: The stage of a message (``Key.STAGE``) and its values (``Stage.*``), in protocol order.
SECAGG_STAGE = "stage"
SECAGG_SETUP = "setup"
SECAGG_SHARE_KEYS = "share_keys"
SECAGG_COLLECT = "collect_masked_vectors"
SECAGG_UNMASK = "unmask"
SECAGG_STAGES = (SECAGG_SETUP, SECAGG_SHARE_KEYS, SECAGG_COLLECT, SECAGG_UNMASK)
#: Setup (server → client): Flower's ``Key.SAMPLE_NUMBER`` … ``Key.MAX_WEIGHT``.
SECAGG_SAMPLE_NUMBER = "sample_num"
SECAGG_SHARE_NUMBER = "share_num"
SECAGG_THRESHOLD = "threshold"
SECAGG_CLIPPING_RANGE = "clipping_range"
SECAGG_TARGET_RANGE = "target_range"
SECAGG_MOD_RANGE = "mod_range"
SECAGG_MAX_WEIGHT = "max_weight"
#: Setup reply: the node's two public keys (``Key.PUBLIC_KEY_1`` masks, ``_2`` encrypts shares).
SECAGG_PUBLIC_KEY_1 = "pk1"
SECAGG_PUBLIC_KEY_2 = "pk2"
#: Share-keys reply: encrypted shares and their destinations (``Key.DESTINATION_LIST``, ``CIPHERTEXT_LIST``).
SECAGG_DESTINATION_LIST = "dsts"
SECAGG_CIPHERTEXT_LIST = "ctxts"
#: Share-keys reply (edgebloom's addition): SHA-256 digests of each holder's two shares, so
#: the server can drop a wrong share at unmasking instead of reconstructing garbage.
SECAGG_HOLDER_LIST = "share-holders"
SECAGG_SEED_SHARE_DIGESTS = "seed-share-digests"
SECAGG_KEY_SHARE_DIGESTS = "key-share-digests"
#: Collect (server → client): the shares addressed to the node and their senders (``Key.SOURCE_LIST``).
SECAGG_SOURCE_LIST = "srcs"
#: Unmask (server → client): survivors and dropped nodes (``Key.ACTIVE_NODE_ID_LIST``, ``DEAD_NODE_ID_LIST``);
#: reply: share owners and shares (``Key.NODE_ID_LIST``, ``Key.SHARE_LIST``).
SECAGG_ACTIVE_NODE_ID_LIST = "active_nids"
SECAGG_DEAD_NODE_ID_LIST = "dead_nids"
SECAGG_NODE_ID_LIST = "nids"
SECAGG_SHARE_LIST = "shares"
#: Collect reply: the masked vector (an ArrayRecord of int64 arrays: SECAGG_META, then the layers).
SECAGG_MASKED = "secagg-masked-vector"
#: First entry of the masked vector: [weight, weight * quantized train loss, unclipped bit].
SECAGG_META = "secagg-meta"


# ------------------------------------------------------------ reading a value off the wire
# A record's value type is a union (a ConfigRecord value may be a list, bytes or an Array);
# these convert one scalar exactly as ``float()`` / ``int()`` do, and name the problem in
# the same TypeError those raise for anything else, so the type checker sees a number.


def as_float(value: object) -> float:
    """``float(value)`` for a scalar record value; TypeError (as ``float()``) for a list or array."""
    if isinstance(value, str | bytes | SupportsFloat | SupportsIndex):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def as_int(value: object) -> int:
    """``int(value)`` for a scalar record value; TypeError (as ``int()``) for a list or array."""
    if isinstance(value, str | bytes | SupportsInt | SupportsIndex):
        return int(value)
    raise TypeError(f"expected an integer, got {type(value).__name__}")
