from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from server.pool import ModelPool
from server.round import NotEnoughReplies, Reply, check_min_replies, process_round
from server.server_app import unpack_submission
from server.validation import Validator

from .helpers import make_submission


def test_replies_are_attributed_by_message_id(tmp_path: Path) -> None:
    sent = {"a": 11, "b": 12, "c": 13, "d": 14}
    replies = [
        Reply("a", submission=make_submission(seed=1)),
        # the SuperLink answers for a lost node from its own id: only reply_to matters
        Reply("b", error=(5, "node unavailable")),
        Reply("c", error=(2, "Traceback ... ValueError: boom")),
        Reply("zzz", submission=make_submission(seed=2)),  # unknown instruction: ignored
        Reply("a", submission=make_submission(seed=3)),  # second reply: ignored
    ]
    with ModelPool(tmp_path) as pool:
        out = process_round(1, sent, replies, validator=Validator(), pool=pool)
        assert list(out.accepted) == [11]
        assert out.failed == {12: "node-unavailable", 13: "client-raised"}
        assert out.missing == [14]
        assert len(pool) == 1
        kinds = {(f.node_id, f.kind) for f in pool.failures()}
        assert kinds == {(12, "node-unavailable"), (13, "client-raised"), (14, "timeout")}
        assert "1/4 accepted" in out.summary()
        check_min_replies(out, 1, len(pool))
        with pytest.raises(NotEnoughReplies, match="fed.min-replies"):
            check_min_replies(out, 2, len(pool))


def test_pool_order_follows_owner_ids_not_arrival(tmp_path: Path) -> None:
    sent = {f"m{i}": 20 + i for i in range(4)}
    subs = {f"m{i}": make_submission(f"owner-{3 - i:03d}", seed=i) for i in range(4)}
    orders = []
    for run, arrival in enumerate((["m0", "m1", "m2", "m3"], ["m2", "m0", "m3", "m1"])):
        replies = [Reply(m, submission=subs[m]) for m in arrival]
        with ModelPool(tmp_path / str(run)) as pool:
            process_round(1, sent, replies, validator=Validator(), pool=pool)
            orders.append([(e.owner_id, e.node_id) for e in pool.entries()])
    assert orders[0] == orders[1]
    assert [owner for owner, _ in orders[0]] == [f"owner-{i:03d}" for i in range(4)]


def test_unpack_submission_from_records() -> None:
    sub = make_submission()
    content = RecordDict(
        {
            "weights": ArrayRecord(array_dict={k: Array(v) for k, v in sub.tensors.items()}),
            "submission": ConfigRecord({"card": sub.card, "signature": sub.signature}),
        }
    )
    got = unpack_submission(content, 10**8)
    assert not isinstance(got, str)
    assert got.digest() == sub.digest()
    assert "limit" in str(unpack_submission(content, 10))
    assert "cannot unpack" in str(unpack_submission(RecordDict({}), 10**8))
    bad = RecordDict(
        {
            "weights": ArrayRecord(array_dict={"w": Array(np.zeros(2, np.float32))}),
            "submission": ConfigRecord({"card": "text"}),
        }
    )
    assert unpack_submission(bad, 10**8) == "card and signature must be bytes"
