"""The Redis store's commands sent together (bridge/store/redis_batch.py), on a real Redis: one pipeline per
loop turn, each reply and each error to its own caller, NOSCRIPT recovered, the replication guard kept,
and a lost connection failing every caller of its batch."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bridge.store.redis_batch import AutoPipeline, NotReplicated
from bridge.store.redis_connection import connect
from tests.support.ports import free_port

ECHO = "return ARGV[1]"


class CountingClient:
    """The real client, with its pipelines counted (what goes over the wire is untouched)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pipelines = 0

    def pipeline(self, transaction: bool = True) -> Any:
        self.pipelines += 1
        return self.client.pipeline(transaction=transaction)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    r = connect(redis_url, decode_responses=True, socket_timeout=5.0)
    yield r
    await r.aclose()


async def test_one_turns_commands_go_as_one_pipeline_and_each_caller_gets_its_own_reply(client: Any) -> None:
    prefix = f"batch-{secrets.token_hex(3)}:"
    await client.mset({f"{prefix}{i}": f"v{i}" for i in range(50)})
    counted = CountingClient(client)
    batch = AutoPipeline(counted)
    async with asyncio.timeout(10):
        replies = await asyncio.gather(*(batch.command("GET", f"{prefix}{i}") for i in range(50)))
    assert replies == [f"v{i}" for i in range(50)]
    assert counted.pipelines == 1


async def test_an_error_reply_fails_only_its_own_caller(client: Any) -> None:
    key = f"batch-hash-{secrets.token_hex(3)}"
    await client.hset(key, "f", "x")
    batch = AutoPipeline(client)
    async with asyncio.timeout(10):
        results = await asyncio.gather(
            batch.command("HGET", key, "f"), batch.command("GET", key), batch.command("HGET", key, "f"),
            return_exceptions=True,
        )
    assert results[0] == "x" and results[2] == "x"
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])


async def test_a_script_the_server_forgot_is_loaded_and_sent_again(client: Any) -> None:
    script = client.register_script(ECHO)
    batch = AutoPipeline(client)
    async with asyncio.timeout(10):
        assert await batch.script(script, ["first"]) == "first"
        await client.script_flush()  # as after a restart of Redis: every cached script is gone
        assert await asyncio.gather(batch.script(script, ["a"]), batch.script(script, ["b"])) == ["a", "b"]


async def test_the_replication_guard_fails_the_writes_of_a_batch_and_only_those(client: Any) -> None:
    # The test Redis has no replica: WAIT 1 answers 0, so the script call (a write) is refused and the read
    # in the same batch is not.
    key = f"batch-guard-{secrets.token_hex(3)}"
    await client.set(key, "kept")
    batch = AutoPipeline(client, guard=(1, 50))
    script = client.register_script(ECHO)
    async with asyncio.timeout(10):
        write, read = await asyncio.gather(batch.script(script, ["w"]), batch.command("GET", key),
                                           return_exceptions=True)
    assert isinstance(write, NotReplicated) and "held by 0 of 1 replicas" in str(write)
    assert read == "kept"


async def test_a_lost_connection_fails_every_caller_of_its_batch() -> None:
    dead = connect(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True, socket_connect_timeout=1.0,
                   socket_timeout=1.0)
    try:
        batch = AutoPipeline(dead)
        async with asyncio.timeout(10):
            results = await asyncio.gather(*(batch.command("GET", f"k{i}") for i in range(5)),
                                           return_exceptions=True)
        assert all(isinstance(r, (RedisConnectionError, OSError)) for r in results), results
    finally:
        await dead.aclose()


async def test_a_call_queued_when_the_store_closes_hears_so(client: Any) -> None:
    batch = AutoPipeline(client)
    asked = asyncio.ensure_future(batch.command("PING"))
    await asyncio.sleep(0)  # queued; its batch goes at the end of the next turn
    await batch.close()
    async with asyncio.timeout(5):
        with pytest.raises(Exception, match="closing"):
            await asked
