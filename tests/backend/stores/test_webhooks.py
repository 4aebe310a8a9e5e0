"""stores/webhooks.py on SQLite and PostgreSQL: the per-user limit, the backoff reset, and the
delivery lease (one owner at a time, taken over only once expired, a round recorded only by
the lease's owner, the cursor never moved back)."""

from __future__ import annotations

from typing import Any

import pytest

from videodetector.backend.stores.webhooks import SqlWebhookStore, TooManyWebhooks

HOOK = {"url": "http://example.org/hook", "secret": "s", "cam_ids": "[]", "match": "all",
        "enabled": 1}


def test_limit_per_user_and_ownership(database: Any, user: int) -> None:  # noqa: F811
    hooks = SqlWebhookStore(database)
    ids = [hooks.create(user, HOOK, cursor=7, limit=2) for _ in range(2)]
    with pytest.raises(TooManyWebhooks) as exc:
        hooks.create(user, HOOK, cursor=7, limit=2)
    assert exc.value.count == 2
    assert [r["id"] for r in hooks.list(user)] == ids
    assert hooks.get(user, ids[0])["cursor"] == 7
    assert hooks.get(user + 100_000, ids[0]) is None
    hooks.delete(user + 100_000, ids[0])  # another user's id: nothing happens
    assert hooks.get(user, ids[0]) is not None
    hooks.delete(user, ids[0])
    assert [r["id"] for r in hooks.list(user)] == ids[1:]


def test_update_resets_the_backoff(database: Any, user: int) -> None:  # noqa: F811
    hooks = SqlWebhookStore(database)
    hook = hooks.create(user, HOOK, cursor=0, limit=20)
    assert hooks.claim(hook, "p1", at=100.0, seconds=30) is not None
    assert hooks.record(hook, "p1", cursor=5, delivered=2, failure=(3, 1e12, "down"))
    row = hooks.get(user, hook)
    assert (row["failures"], row["last_error"], row["delivered"]) == (3, "down", 2)
    assert hook not in [r["id"] for r in hooks.due(1000.0)]  # backing off
    hooks.update(user, hook, {"match": "watchlist"})
    row = hooks.get(user, hook)
    assert (row["match"], row["failures"], row["next_try"]) == ("watchlist", 0, 0)
    assert hook in [r["id"] for r in hooks.due(1000.0)]
    with pytest.raises(ValueError, match="cursor"):
        hooks.update(user, hook, {"cursor": 0})


def test_the_lease_has_one_owner_until_it_expires(database: Any, user: int) -> None:  # noqa: F811
    hooks = SqlWebhookStore(database)
    hook = hooks.create(user, HOOK, cursor=10, limit=20)
    assert hooks.claim(hook, "p1", at=100.0, seconds=30)["cursor"] == 10
    assert hooks.claim(hook, "p2", at=120.0, seconds=30) is None  # p1's until 130
    assert not hooks.record(hook, "p2", cursor=99, delivered=1, failure=None)
    assert hooks.renew(hook, "p1", until=160.0) and not hooks.renew(hook, "p2", until=200.0)
    assert hooks.claim(hook, "p2", at=150.0, seconds=30) is None  # renewed: p1's until 160
    assert hooks.record(hook, "p1", cursor=12, delivered=2, failure=None)
    assert hooks.claim(hook, "p2", at=161.0, seconds=30)["cursor"] == 12  # expired: taken
    assert not hooks.renew(hook, "p1", until=300.0)
    assert hooks.record(hook, "p2", cursor=11, delivered=0, failure=None)
    assert hooks.get(user, hook)["cursor"] == 12  # never back
    hooks.release("p2")
    assert hooks.claim(hook, "p1", at=162.0, seconds=30) is not None  # released: free
