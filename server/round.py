"""One collection round without Flower: attribute replies to nodes, validate, store, report.

The ServerApp turns Flower replies into :class:`Reply` objects and calls
:func:`process_round`. Replies are attributed by the id of the instruction they answer
(``reply_to``) through the server's own ``message_id -> node`` table, never by the
sender's node id: the SuperLink answers for a lost node from its own id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from free_common.card import decode_card
from free_common.submission import Submission
from server.pool import ModelPool
from server.validation import Rejected, Validator

__all__ = [
    "ERROR_KINDS",
    "NotEnoughReplies",
    "Reply",
    "RoundOutcome",
    "check_min_replies",
    "process_round",
]

logger = logging.getLogger(__name__)

# Flower error codes (flwr.app ErrorCode) -> what happened to the owner.
ERROR_KINDS: dict[int, str] = {
    1: "client-app-load-failed",
    2: "client-raised",
    3: "expired",
    4: "expired",
    5: "node-unavailable",
    6: "mod-failed",
    7: "invalid-app",
    8: "client-crashed",
}


class NotEnoughReplies(RuntimeError):
    """Fewer owners than ``fed.min-replies`` contributed an accepted model this round."""


@dataclass(frozen=True)
class Reply:
    """A reply reduced to what the round needs.

    Attributes:
        reply_to: id of the instruction this answers.
        error: ``(code, reason)`` for an error reply, else None.
        submission: the unpacked submission, or None.
        unpack_error: why the reply could not be unpacked into a submission (hostile or
            malformed records), else "".
    """

    reply_to: str
    error: tuple[int, str] | None = None
    submission: Submission | None = None
    unpack_error: str = ""


@dataclass
class RoundOutcome:
    """What happened to every owner asked in one round."""

    round: int
    asked: int
    accepted: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """One log line: accepted / rejected / failed / missing counts."""
        return (
            f"round {self.round}: {len(self.accepted)}/{self.asked} accepted, "
            f"{len(self.rejected)} rejected, {len(self.failed)} failed, "
            f"{len(self.missing)} missing (timed out)"
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (node ids as strings)."""
        return {
            "round": self.round,
            "asked": self.asked,
            "accepted": {str(k): v for k, v in self.accepted.items()},
            "rejected": {str(k): v for k, v in self.rejected.items()},
            "failed": {str(k): v for k, v in self.failed.items()},
            "missing": self.missing,
        }


def process_round(
    round_num: int,
    sent: Mapping[str, int],
    replies: Iterable[Reply],
    *,
    validator: Validator,
    pool: ModelPool,
) -> RoundOutcome:
    """Validate and store every reply of one round; record every failure by node.

    Args:
        round_num: 1-based round.
        sent: instruction message id -> destination node id.
        replies: the replies that came back before the timeout.
        validator: checks each submission (the pool's digests serve as the replay check).
        pool: where accepted models, rejections and failures are recorded.

    Returns:
        The outcome; owners with no reply are listed as missing.
    """
    outcome = RoundOutcome(round=round_num, asked=len(sent))
    first: dict[str, Reply] = {}
    for reply in replies:  # arrival order: the first reply to an instruction counts
        node = sent.get(reply.reply_to)
        if node is None:
            logger.warning(
                "round %d: ignoring a reply to unknown message %r", round_num, reply.reply_to
            )
        elif reply.reply_to in first:
            logger.warning("round %d: ignoring a second reply from node %d", round_num, node)
        else:
            first[reply.reply_to] = reply
    answered = set(first)
    for reply in sorted(first.values(), key=lambda r: _order_key(r, sent)):
        _handle(round_num, sent[reply.reply_to], reply, validator, pool, outcome)
    for message_id, node in sent.items():
        if message_id not in answered:
            outcome.missing.append(node)
            pool.record_failure(
                round_num=round_num, node_id=node, kind="timeout", detail="no reply before timeout"
            )
    logger.info(outcome.summary())
    return outcome


def _order_key(reply: Reply, sent: Mapping[str, int]) -> tuple[str, int, str]:
    """Where a reply goes in the pool: by claimed owner id, then node, never by arrival.

    Replies arrive in whatever order the owners finish, so the pool's acceptance order (and
    with it a seeded FREE run's teacher sampling) would change from run to run. The owner id
    is only a sort key here; validation decides what the submission is worth.
    """
    owner = ""
    if reply.submission is not None:
        try:
            owner = decode_card(reply.submission.card).owner_id
        except Exception:  # noqa: BLE001 - hostile bytes are rejected later, with a reason
            owner = ""
    return owner, sent[reply.reply_to], reply.reply_to


def _handle(
    round_num: int,
    node: int,
    reply: Reply,
    validator: Validator,
    pool: ModelPool,
    outcome: RoundOutcome,
) -> None:
    if reply.error is not None:
        code, reason = reply.error
        kind = ERROR_KINDS.get(code, f"error-{code}")
        outcome.failed[node] = kind
        pool.record_failure(round_num=round_num, node_id=node, kind=kind, detail=reason)
        return
    if reply.submission is None:
        detail = reply.unpack_error or "reply carries no submission"
        outcome.rejected[node] = "malformed"
        pool.record_rejection(
            round_num=round_num, node_id=node, digest="", reason="malformed", detail=detail
        )
        return
    try:
        checked = validator.validate(reply.submission, node_id=node)
    except Rejected as err:
        _reject(
            round_num, node, reply.submission, err.reason, err.message, pool, outcome, validator
        )
        return
    except Exception as err:  # noqa: BLE001 - a hostile payload must never stop the server
        logger.exception("round %d: validator failed on node %d's submission", round_num, node)
        _reject(round_num, node, reply.submission, "invalid", repr(err), pool, outcome, validator)
        return
    outcome.accepted[node] = pool.add(checked, node_id=node, round_num=round_num)


def _reject(
    round_num: int,
    node: int,
    submission: Submission,
    reason: str,
    detail: str,
    pool: ModelPool,
    outcome: RoundOutcome,
    validator: Validator,
) -> None:
    outcome.rejected[node] = reason
    pool.record_rejection(
        round_num=round_num,
        node_id=node,
        digest=_safe_digest(submission, validator),
        reason=reason,
        detail=detail,
    )


def _safe_digest(submission: Submission, validator: Validator) -> str:
    """Digest of a rejected submission for the record, or "" when it cannot be computed.

    Not computed for a submission over the validator's counts and sizes: hashing 480,000
    tiny arrays (or a huge card) only for the record would cost seconds.
    """
    try:
        validator.check_bounds(submission)
        return submission.digest().hex()
    except Exception:  # noqa: BLE001 - only for the record
        return ""


def check_min_replies(outcome: RoundOutcome, min_replies: int, pool_size: int) -> None:
    """Stop the run clearly when too few owners contributed.

    Raises:
        NotEnoughReplies: fewer than ``min_replies`` accepted models this round.
    """
    if len(outcome.accepted) >= min_replies:
        return
    raise NotEnoughReplies(
        f"{outcome.summary()}; need at least {min_replies} accepted models "
        f"(fed.min-replies), the pool holds {pool_size}. Failed: {outcome.failed or 'none'}; "
        f"rejected: {outcome.rejected or 'none'}; missing: {outcome.missing or 'none'}"
    )
