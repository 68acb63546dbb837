"""Retention: every table bounded by rows and by age, a bounded batch at a time; bounded previews."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kosmesh.storage import Retention, Storage, preview

NOW = 1_000_000.0


def _noted(_: BaseException | None) -> None:
    pass


async def _filled(tmp_path: Path, n: int) -> Storage:
    storage = Storage(tmp_path / "node.db")
    await storage.open()
    for i in range(n):
        when = NOW - (n - i)  # one a second, the last one just now
        storage.tasks.record(
            task_id=f"t{i}", agent="echo", source="klp://x/", status="processed", reason=None,
            request=i, result=i, received_at=when, completed_at=when, then=_noted,
        )  # fmt: skip
        storage.messages.log(
            message_id=f"m{i}", direction="in", type="PEER_DISCOVERY", source="klp://x/", target="klp://y/",
            status="rejected", reason="source_mismatch", when=when,
        )  # fmt: skip
        storage.connections.opened(f"c{i}", f"p{i}", "inbound", "/ip4/127.0.0.1/tcp/1", when)
        storage.peers.seen(f"p{i}", now=when)
    return storage


async def test_rows_past_the_bound_go_oldest_first_in_bounded_batches(tmp_path: Path) -> None:
    storage = await _filled(tmp_path, 100)
    try:
        bounds = Retention(tasks_max_rows=10, messages_max_rows=20, connections_max_rows=30, peers_max_rows=40)
        first = storage.prune(bounds, keep_peers=set(), now=NOW, batch=50)
        assert (first.tasks, first.messages, first.connections, first.peers, first.more) == (50, 50, 50, 50, True)
        second = storage.prune(bounds, keep_peers=set(), now=NOW, batch=50)
        assert (second.tasks, second.messages, second.connections, second.peers) == (40, 30, 20, 10)
        assert not storage.prune(bounds, keep_peers=set(), now=NOW, batch=50).more
        assert [r["task_id"] for r in await storage.tasks.find("t90")] == ["t90"]
        assert await storage.tasks.find("t89") == []
        assert (await storage.tasks.count(), await storage.messages.count()) == (10, 20)
        assert await storage.connections.count() == 30
        peers = [p["peer_id"] for p in await storage.peers.all()]
        assert len(peers) == 40 and "p99" in peers and "p59" not in peers
    finally:
        await storage.close()


async def test_rows_past_their_age_go_and_kept_peers_stay(tmp_path: Path) -> None:
    storage = await _filled(tmp_path, 100)
    try:
        bounds = Retention(tasks_max_age_s=10.5, messages_max_age_s=20.5, connections_max_age_s=30.5, peers_max_rows=5)
        pruned = storage.prune(bounds, keep_peers={"p0", "p1"}, now=NOW)
        assert (pruned.tasks, pruned.messages, pruned.connections, pruned.peers) == (90, 80, 70, 95)
        peers = {p["peer_id"] for p in await storage.peers.all()}
        assert peers == {"p0", "p1", "p97", "p98", "p99"}  # the kept ones, and the 3 most recent others
    finally:
        await storage.close()


def test_preview_of_a_huge_payload_is_cut_without_walking_all_of_it() -> None:
    huge = {"items": list(range(1_000_000)), "text": "x" * 10_000_000}
    text = preview(huge, limit=200)
    assert len(text) <= 200 and text.endswith("…") and text.startswith('{"items": [0, 1, 2')
    assert preview(b"\x00" * 50) == '"<50 bytes>"'
    assert preview({"a": [1, 2.5, None, True]}) == json.dumps({"a": [1, 2.5, None, True]})
    assert json.loads(preview([float("inf"), float("nan")])) == ["inf", "nan"]  # strict JSON, unlike json.dumps


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=30,
)


@given(json_values, st.integers(8, 300))
def test_preview_is_json_when_it_fits_and_never_exceeds_the_limit(value: object, limit: int) -> None:
    text = preview(value, limit)
    assert len(text) <= limit
    full = json.dumps(value)
    if len(full) <= limit - 1:
        assert json.loads(text) == json.loads(full)
    elif not text.endswith("…"):
        json.loads(text)
