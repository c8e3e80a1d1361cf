"""Which replies belong to a round: one contribution per sampled client, framework-free.

A synchronous round sends one message to each sampled node and must aggregate at
most one reply per message. User-level DP (McMahan et al. 2018, arXiv:1710.06963)
bounds the influence of *one contribution per client*; a second reply from the same
node, or a reply from a node that was never sampled, breaks that bound, and so does
a reply to another round's or another stage's message. This module matches reply
headers against the messages sent and returns, per reply, either the node it
answers for or a :class:`~strategies.core.reply_checks.Rejection` with one of the reason
codes below. The Flower glue (``strategies/algorithms/fedavg.py``) converts message metadata
into the plain values used here.

Matching is by message id: a real Grid sets each message's id when it pushes it,
and a reply's ``reply_to_message_id`` names the message it answers. An error that
the SuperLink writes on behalf of a lost node carries the SuperLink's node id as
its source, but its ``reply_to_message_id`` names the lost node's message: it is
attributed to the node the message was sent to. Messages that were never pushed
(a strategy driven directly in unit tests, without a Grid) have no id; those are
matched by destination node instead.

When one message gets several replies, the first in arrival order is kept and the
others are dropped as ``duplicate`` (the SuperLink itself stores one reply per
message, so this only happens with a faulty or hostile transport).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strategies.core.reply_checks import Rejection

# Reason codes for replies that do not belong to the round.
DUPLICATE = "duplicate"
NOT_SAMPLED = "not-sampled"
WRONG_MESSAGE_TYPE = "wrong-message-type"
UNKNOWN_REPLY_TO = "unknown-reply-to"

IDENTITY_REASONS = (DUPLICATE, NOT_SAMPLED, WRONG_MESSAGE_TYPE, UNKNOWN_REPLY_TO)


@dataclass(frozen=True)
class Sent:
    """A message the server sent this round: its id ("" if never pushed) and destination."""

    message_id: str
    node: int


@dataclass(frozen=True)
class ReplyHeader:
    """What identifies a reply: the message it answers, its source, its type, and whether it is an error."""

    reply_to: str
    src_node: int
    message_type: str
    is_error: bool


@dataclass(frozen=True)
class Match:
    """The outcome for one reply: the node it answers for, or why it was dropped.

    ``node`` is set for every reply matched to a sent message (for an error reply it is
    the node the message went to, not the reply's source); ``rejection`` is set for a
    reply that does not belong to the round.
    """

    node: int | None
    rejection: Rejection | None = None


def match_replies(sent: Sequence[Sent], replies: Sequence[ReplyHeader], *, message_type: str) -> list[Match]:
    """Match each reply to the message it answers; at most one reply per message is accepted.

    Parameters
    ----------
    sent : sequence of Sent
        The round's messages of this stage (one per sampled node).
    replies : sequence of ReplyHeader
        The replies received, in arrival order.
    message_type : str
        The stage's message type (``"train"`` or ``"evaluate"``).

    Returns
    -------
    list of Match
        One per reply, in the same order.
    """
    by_id = {s.message_id: s for s in sent if s.message_id}
    by_node = {s.node: s for s in sent}  # messages never pushed (unit use) are matched by node
    answered: set[int] = set()
    matches = []
    for reply in replies:
        match = _match_one(reply, by_id, by_node, message_type)
        node = match.node
        if match.rejection is None and node is not None:
            if node in answered:
                match = Match(
                    node, Rejection(DUPLICATE, f"node {node} already replied to its message this round")
                )
            else:
                answered.add(node)
        matches.append(match)
    return matches


def _match_one(
    reply: ReplyHeader, by_id: dict[str, Sent], by_node: dict[int, Sent], message_type: str
) -> Match:
    if reply.message_type != message_type:
        return Match(
            None,
            Rejection(
                WRONG_MESSAGE_TYPE,
                f"reply of type {reply.message_type!r} from node {reply.src_node} "
                f"in a {message_type!r} stage",
            ),
        )
    target = by_id.get(reply.reply_to) if reply.reply_to else None
    if target is None and not by_id and reply.src_node in by_node:
        target = by_node[reply.src_node]  # nothing was pushed: match by node
    if target is None:
        if reply.src_node not in by_node:
            return Match(
                None,
                Rejection(
                    NOT_SAMPLED, f"node {reply.src_node} was not sampled for this {message_type} stage"
                ),
            )
        return Match(
            None,
            Rejection(
                UNKNOWN_REPLY_TO,
                f"reply from node {reply.src_node} answers message {reply.reply_to!r}, "
                f"which was not sent this {message_type} stage",
            ),
        )
    if not reply.is_error and reply.src_node != target.node:
        # A node answering another node's message: not that node's contribution.
        return Match(
            None,
            Rejection(
                UNKNOWN_REPLY_TO,
                f"node {reply.src_node} answered message {reply.reply_to!r}, "
                f"which was sent to node {target.node}",
            ),
        )
    return Match(target.node)
