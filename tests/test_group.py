"""The relay: Group and Hub against the session's real Redis."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from moi.core.info import Info, Status, new_id, new_info
from moi.errors import NotInGroup, RootRemoval
from moi.group import Group
from moi.relay.hub import Hub
from moi.storage.store import Store, set_fields

WAIT = 10  # seconds before a missing frame fails the test (never an assertion on time)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def add_job(store: Store, group_id: str, name: str = "job") -> str:
    job_id = new_id()
    store.add_nodes(group_id, [new_info(job_id, name, "job", store.keys.channel(job_id), parent=group_id)])
    return job_id


class Frames:
    """Records what a Group forwards, and waits for it."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, Info]] = []
        self._changed = asyncio.Event()

    def __call__(self, action: str, info: Info) -> None:
        self.frames.append((action, info))
        self._changed.set()

    async def until(self, done: Callable[[list[tuple[str, Info]]], bool]) -> list[tuple[str, Info]]:
        async def wait() -> None:
            while not done(self.frames):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), WAIT)
        return self.frames

    async def seen(self, action: str, node_id: str, **fields: Any) -> Info:
        def match(frames: list[tuple[str, Info]]) -> bool:
            return any(a == action and i["id"] == node_id and _has(i, fields) for a, i in frames)

        await self.until(match)
        return next(i for a, i in self.frames if a == action and i["id"] == node_id and _has(i, fields))

    def ids(self, action: str) -> list[str]:
        return [info["id"] for a, info in self.frames if a == action]


def _has(info: Info, fields: dict[str, Any]) -> bool:
    return all(info.get(key) == value for key, value in fields.items())


@pytest.fixture
def tree(store: Store) -> dict[str, str]:
    """alice: two jobs and a nested group holding one job; bob: one job."""
    alice = store.ensure_group("alice")
    nested = store.create_group("analysis", alice)
    return {
        "alice": alice,
        "job1": add_job(store, alice, "one"),
        "job2": add_job(store, alice, "two"),
        "nested": nested,
        "deep": add_job(store, nested, "deep"),
        "bob": (bob := store.ensure_group("bob")),
        "bobjob": add_job(store, bob, "bob's"),
    }


async def following(redis_url: str, store: Store, group_id: str) -> tuple[Hub, Group, Frames]:
    hub = Hub(redis_url, store.keys, store.ttl)
    frames = Frames()
    group = Group(hub, group_id, frames)
    await group.start()
    return hub, group, frames


def test_get_forwards_the_whole_subtree_once(redis_url: str, store: Store, tree: dict[str, str]) -> None:
    async def test() -> None:
        hub, group, frames = await following(redis_url, store, tree["alice"])
        await group.get([tree["alice"], tree["nested"], tree["job1"]])  # overlapping on purpose
        got = frames.ids("get")
        assert sorted(got) == sorted(tree[k] for k in ("alice", "job1", "job2", "nested", "deep"))
        assert got[0] == tree["alice"]  # parents before children
        assert got.index(tree["nested"]) < got.index(tree["deep"])
        root = frames.frames[0][1]
        assert sorted(root["jobs"]) == sorted([tree["job1"], tree["job2"], tree["nested"]])
        await group.close()
        await hub.close()

    run(test)


def test_add_update_in_order_with_nested_groups(redis_url: str, store: Store, tree: dict[str, str]) -> None:
    async def test() -> None:
        hub, group, frames = await following(redis_url, store, tree["alice"])
        job = add_job(store, tree["nested"], "late")
        await frames.seen("add", job, status=Status.QUEUED)
        for step in range(10):
            store.update(job, set_fields(status=f"step {step}"))
        await frames.seen("update", job, status="step 9")
        # Updates that arrive together are forwarded once, as the latest state: never backwards.
        revisions = [info["revision"] for action, info in frames.frames if action == "update"]
        assert revisions == sorted(set(revisions)) and revisions[-1] == 10

        inner = store.create_group("inner", tree["nested"])
        inner_job = add_job(store, inner, "inner job")
        await frames.seen("add", inner_job)
        assert frames.ids("add") == [job, inner, inner_job]
        store.update(inner_job, set_fields(status=Status.SUCCESS))
        await frames.seen("update", inner_job, status=Status.SUCCESS)
        await group.close()
        await hub.close()

    run(test)


def test_nothing_lost_between_read_and_subscribe(redis_url: str, store: Store, tree: dict[str, str]) -> None:
    """Jobs are added and changed while the Group starts: its view ends equal to Redis."""

    def writer() -> None:
        for n in range(40):
            job = add_job(store, tree["alice"], f"busy {n}")
            store.update(job, set_fields(status=Status.RUNNING))

    async def test() -> None:
        thread = threading.Thread(target=writer)
        thread.start()
        hub, group, frames = await following(redis_url, store, tree["alice"])
        await group.get([tree["alice"]])
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        expected = {info["id"]: info["revision"] for info in store.descendant_jobs(tree["alice"])}

        def caught_up(got: list[tuple[str, Info]]) -> bool:
            return all(_view(got).get(job) == revision for job, revision in expected.items())

        await frames.until(caught_up)
        assert len(expected) == 43
        await group.close()
        await hub.close()

    run(test)


def _view(frames: list[tuple[str, Info]]) -> dict[str, int]:
    """What a client would show: latest revision per id, stale frames dropped."""
    view: dict[str, int] = {}
    for action, info in frames:
        if action == "remove":
            view.pop(info["id"], None)
        elif info["revision"] >= view.get(info["id"], -1):
            view[info["id"]] = info["revision"]
    return view


def test_remove_a_nested_group(redis_url: str, store: Store, r: redis.Redis, tree: dict[str, str]) -> None:
    async def test() -> None:
        hub, group, frames = await following(redis_url, store, tree["alice"])
        await group.remove([tree["nested"]])
        await frames.seen("remove", tree["nested"])
        assert frames.ids("remove") == [tree["deep"], tree["nested"]]  # children first, each once
        assert tree["nested"] not in group and tree["deep"] not in group
        assert store.keys.channel(tree["deep"]) not in hub.channels
        assert r.get(tree["nested"]) is None and r.get(tree["deep"]) is None
        assert r.smembers(f"{tree['alice']}:jobs") == {tree["job1"], tree["job2"]}
        with pytest.raises(RootRemoval):
            await group.remove([tree["alice"]])
        await group.close()
        await hub.close()

    run(test)


def test_a_node_deleted_behind_the_relays_back_is_forwarded_as_removed(
    redis_url: str, store: Store, r: redis.Redis, tree: dict[str, str]
) -> None:
    """An update whose re-read finds nothing (expired, or deleted by hand) ends in ``remove``, not silence."""

    async def test() -> None:
        hub, group, frames = await following(redis_url, store, tree["alice"])
        store.update(tree["job1"], set_fields(status=Status.RUNNING))
        await frames.seen("update", tree["job1"], status=Status.RUNNING)
        r.delete(store.keys.info(tree["job1"]))
        store.publish(tree["job1"], "update", [tree["job1"]])
        removed = await frames.seen("remove", tree["job1"])
        assert removed["status"] == Status.RUNNING  # the last state the page had
        assert tree["job1"] not in group and store.keys.channel(tree["job1"]) not in hub.channels
        store.update(tree["job2"], set_fields(status=Status.SUCCESS))  # the others still flow
        await frames.seen("update", tree["job2"], status=Status.SUCCESS)
        await group.close()
        await hub.close()

    run(test)


def test_other_users_ids_are_refused(redis_url: str, store: Store, r: redis.Redis, tree: dict[str, str]) -> None:
    async def test() -> None:
        hub, group, frames = await following(redis_url, store, tree["alice"])
        for request in (group.get, group.remove):
            with pytest.raises(NotInGroup):
                await request([tree["bobjob"]])
            with pytest.raises(NotInGroup):
                await request([tree["job1"], tree["bob"]])
        assert r.get(tree["bobjob"]) is not None and r.get(tree["job1"]) is not None
        # Someone announcing bob's job in alice's group does not make it hers.
        store.publish(tree["alice"], "add", [tree["bobjob"]])
        store.update(tree["bobjob"], set_fields(status=Status.RUNNING))
        job = add_job(store, tree["alice"])
        await frames.seen("add", job)
        assert all(info["id"] != tree["bobjob"] for _, info in frames.frames)
        await group.close()
        await hub.close()

    run(test)


def test_groups_share_one_pubsub_connection(redis_url: str, store: Store, r: redis.Redis, tree: dict[str, str]) -> None:
    def subscribers() -> int:
        return sum(1 for c in r.client_list() if c["cmd"] in ("subscribe", "unsubscribe"))

    async def test() -> None:
        before = subscribers()  # a dispatcher of this process listens for its queue's announcements
        hub = Hub(redis_url, store.keys, store.ttl)
        groups = [Group(hub, tree["alice"], Frames()) for _ in range(5)]
        for group in groups:
            await group.start()
        channel = store.keys.channel(tree["alice"])
        assert r.pubsub_numsub(channel) == [(channel, 1)]
        assert hub.listener_count(channel) == 5
        assert subscribers() == before + 1
        for group in groups[1:]:
            await group.close()
        assert channel in hub.channels
        await groups[0].close()
        assert hub.channels == []
        await hub.close()

    run(test)


def test_subscribe_returns_once_redis_listens(redis_url: str, store: Store, r: redis.Redis) -> None:
    class Heard:
        def __init__(self) -> None:
            self.heard = asyncio.Event()

        def message(self, channel: str, payload: dict[str, Any]) -> None:
            self.heard.set()

        def resync(self) -> None:
            pass

    async def test() -> None:
        hub = Hub(redis_url, store.keys, store.ttl)
        for n in range(20):
            listener = Heard()
            await hub.subscribe([f"probe{n}"], listener)
            assert r.publish(f"probe{n}", "{}") == 1  # published after subscribe: Redis has a listener
            await asyncio.wait_for(listener.heard.wait(), WAIT)
        await hub.close()

    run(test)


def test_resync_after_the_pubsub_connection_drops(
    redis_url: str, store: Store, r: redis.Redis, tree: dict[str, str]
) -> None:
    async def test() -> None:
        hub, group, frames = await following(redis_url, store, tree["alice"])
        r.client_kill_filter(_type="pubsub")
        # Changes made while the hub is away are not lost: it re-subscribes and re-reads.
        job = add_job(store, tree["alice"], "while away")
        store.update(tree["job1"], set_fields(status=Status.FAILED))
        await frames.seen("add", job)
        await frames.seen("update", tree["job1"], status=Status.FAILED)
        await frames.until(lambda _: hub.reconnects >= 1)
        job2 = add_job(store, tree["alice"], "after")  # and it keeps following
        await frames.seen("add", job2)
        await hub.reconnect()  # on demand too
        job3 = add_job(store, tree["alice"], "after reconnect()")
        await frames.seen("add", job3)
        await frames.until(lambda _: hub.reconnects >= 2)
        await group.close()
        await hub.close()

    run(test)
