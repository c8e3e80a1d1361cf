"""Client side of update compression: reply with the compressed update, keep the top-k residual.

When the server's train config carries ``compression`` (``int8`` or ``topk``, set by
``strategies.wrappers.compressed.CompressedStrategy``), :func:`compression_mod` (the
outermost of the ClientApp's train mods, so it encodes exactly what the node would
otherwise send, after clipping and any simulated attack) replies with
``delta = local - global`` of every floating layer encoded by
:func:`strategies.numeric.compression.encode_update` under the record ``compressed-update``
instead of the full model under ``arrays``. Integer buffers (BatchNorm's
``num_batches_tracked``) are not sent: they are not parameters, and the server keeps
the global model's values for them.

Top-k uses error feedback (Stich et al. 2018, arXiv:1809.07599): what a round does
not send is added to the next round's update. The residual lives in the node's
``context.state`` (a ``RecordDict``), which Flower 1.41 keeps per node and run: the
simulation engine stores the context each ClientApp call returns and passes it to the
node's next call (``vce_api.worker``: ``retrieve_context`` / ``update_context``), and a
deployed SuperNode stores the context each ClientApp process pushes back and hands it
to the next process of the run, so it works when every message runs in a fresh process.
It does not survive a SuperNode restart (in-memory node state) or a new run (a resumed
run starts with no residual); a residual that does not fit the model is discarded.
"""

from __future__ import annotations

from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore import log

from strategies.core.records import from_layers, to_layers
from strategies.numeric.compression import ErrorFeedback, encode_update, is_compressed
from tasks import wire

ARRAYS_KEY, COMPRESSED_KEY = wire.ARRAYS, wire.COMPRESSED
COMPRESSION_KEY, TOPK_FRACTION_KEY = wire.COMPRESSION, wire.TOPK_FRACTION

#: ``context.state`` record holding the top-k residual of every layer.
RESIDUAL_KEY = "topk-residual"


def reply_arrays(
    names: list[str],
    global_layers: list[np.ndarray],
    new_layers: list[np.ndarray],
    config: ConfigRecord,
    state: RecordDict,
) -> tuple[str, ArrayRecord]:
    """The record key and arrays of a train reply: the model, or its compressed update.

    Parameters
    ----------
    names : list of str
        Layer names (the model's state_dict order).
    global_layers, new_layers : list of np.ndarray
        The received global model and the locally trained one.
    config : ConfigRecord
        The train config; ``compression`` and ``topk-fraction`` select the encoding.
    state : RecordDict
        The node's ``context.state``; top-k reads and writes its residual here.

    Returns
    -------
    tuple of (str, ArrayRecord)
        ``("arrays", model)`` without ``compression`` in the config, else
        ``("compressed-update", encoded update)`` of the floating layers only (integer
        buffers are not sent; see :func:`strategies.numeric.compression.is_compressed`).
    """
    if COMPRESSION_KEY not in config:
        return ARRAYS_KEY, from_layers(names, new_layers)
    scheme = str(config[COMPRESSION_KEY])
    fraction = wire.as_float(config.get(TOPK_FRACTION_KEY, 1.0))
    # Floating layers only: integer buffers (BatchNorm's num_batches_tracked) are not
    # parameters, the server keeps its own; a counter's step must not enter top-k or the
    # residual (and bool buffers cannot even be subtracted).
    sent = [
        (name, np.asarray(new) - np.asarray(old))
        for name, new, old in zip(names, new_layers, global_layers, strict=True)
        if is_compressed(np.asarray(old).dtype)
    ]
    sent_names, deltas = [n for n, _ in sent], [d for _, d in sent]
    feedback = load_residual(state, sent_names, deltas) if scheme == "topk" else None
    encoded = encode_update(sent_names, deltas, scheme=scheme, topk_fraction=fraction, feedback=feedback)
    if feedback is not None:
        residuals = feedback.state_dict()
        state[RESIDUAL_KEY] = from_layers(list(residuals), list(residuals.values()))
    return COMPRESSED_KEY, from_layers(list(encoded), list(encoded.values()))


def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: replace the reply's model by its compressed update when the config asks.

    Reads ``compression`` / ``topk-fraction`` from the message's train config; the top-k
    residual lives in ``context.state`` (see the module docstring). Without
    ``compression`` in the config, or on an error reply, the reply passes through.
    """
    config = msg.content.config_records.get(wire.CONFIG)
    reply = call_next(msg, context)
    if config is None or COMPRESSION_KEY not in config or reply.has_error():
        return reply
    if ARRAYS_KEY not in reply.content.array_records:
        return reply
    local = reply.content.array_records[ARRAYS_KEY]
    names = list(local.keys())
    key, arrays = reply_arrays(
        names,
        to_layers(msg.content.array_records[ARRAYS_KEY], names),
        to_layers(local),
        config,
        context.state,
    )
    del reply.content[ARRAYS_KEY]
    reply.content[key] = arrays
    return reply


def load_residual(state: RecordDict, names: list[str], deltas: list[np.ndarray]) -> ErrorFeedback:
    """The node's error-feedback memory; empty if there is none or it does not fit ``deltas``."""
    record = state.array_records.get(RESIDUAL_KEY)
    if record is None:
        return ErrorFeedback()
    try:
        residuals = dict(zip(record.keys(), to_layers(record), strict=True))
        fits = set(residuals) <= set(names) and all(
            residuals[n].shape == d.shape and residuals[n].dtype == d.dtype
            for n, d in zip(names, deltas, strict=True)
            if n in residuals
        )
        if fits:
            return ErrorFeedback.from_state_dict(residuals)
        problem = "it does not match the model's layers"
    except ValueError as exc:
        problem = str(exc)
    log(WARNING, "top-k compression: discarding the stored residual (%s)", problem)
    return ErrorFeedback()
