"""The Redis store's commands, sent together: what the store asks in one turn of the event loop goes to
Redis as one pipeline (one connection, one write, one read of the replies).

Why: redis-py's asyncio client spends 57-118 µs of this process's CPU on each command sent on its own
(taking a pooled connection, packing, waiting, parsing), and 12-27 µs on each in a pipeline of 8-128;
the store makes about seven round trips per alert (docs/operations/redis.md, "Commands sent together").

The contract is the client's, per command:
- each caller awaits its own reply; an error reply (a script's refusal, a wrong type) goes to its own
  caller only;
- commands of one batch run on one connection in the order they were asked (a caller that awaits each
  command before the next keeps its order, as before); Redis runs each script atomically as before;
- a lost connection or a timeout fails every command of that batch: none of their alerts is
  acknowledged, and the store's retries (with their tokens) decide as before;
- a script the server does not know (NOSCRIPT, after a restart or SCRIPT FLUSH) is loaded and that one
  call sent again, on its own;
- the replication guard: with `min_replicas` set, a batch holding a script call (every write) ends with
  one `WAIT`, which counts the replicas holding every write before it on that connection; fewer copies
  fail each of those calls with `NotReplicated`, exactly as the per-command guard does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, RedisError

GUARDED_COMMANDS = frozenset({"EVALSHA", "EVAL", "FCALL"})  # every write of the store is a script
MAX_BATCH = 128  # commands per pipeline; more wait for the next turn (one more connection)


class NotReplicated(RedisError):
    """A write reached fewer replicas than min_replicas within replica_timeout_ms."""


def replication_shortfall(copies: int, min_replicas: int, timeout_ms: int) -> NotReplicated | None:
    """What `WAIT min_replicas timeout_ms` answering `copies` means for the writes it covers. Pure."""
    if copies >= min_replicas:
        return None
    return NotReplicated(f"write held by {copies} of {min_replicas} replicas after {timeout_ms} ms (not acknowledged)")


@dataclass
class _Call:
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    script: Any = None  # the redis-py Script of an EVALSHA (args: "EVALSHA", sha, 0, *its args), for NOSCRIPT

    @property
    def write(self) -> bool:
        return str(self.args[0]).upper() in GUARDED_COMMANDS


class AutoPipeline:
    """Batches the commands asked in one loop turn. `guard`: (min_replicas, replica_timeout_ms)."""

    def __init__(self, client: Any, guard: tuple[int, int] = (0, 0), max_batch: int = MAX_BATCH) -> None:
        self._client = client
        self._min_replicas, self._replica_timeout_ms = guard
        self._max_batch = max_batch
        self._queue: list[_Call] = []
        self._flush_queued = False
        self._sending: set[asyncio.Task[None]] = set()

    async def command(self, *args: Any) -> Any:
        """One command, e.g. `command("HGET", key, field)`: its reply, decoded as the client decodes."""
        return await self._ask(_Call(args, asyncio.get_running_loop().create_future()))

    async def script(self, script: Any, args: list[Any]) -> Any:
        """A registered redis-py Script, called with no keys (the store's scripts name theirs from args)."""
        return await self._ask(_Call(("EVALSHA", script.sha, 0, *args), asyncio.get_running_loop().create_future(),
                                     script))

    async def close(self) -> None:
        """Stop: batches under way are cancelled, and their callers hear the store is closing."""
        tasks = list(self._sending)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        failed, self._queue = self._queue, []
        for call in failed:
            _fail(call, RedisError("the store is closing"))

    async def _ask(self, call: _Call) -> Any:
        self._queue.append(call)
        if not self._flush_queued:
            self._flush_queued = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await call.future

    def _flush(self) -> None:
        batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
        self._flush_queued = bool(self._queue)
        if self._queue:
            asyncio.get_running_loop().call_soon(self._flush)
        live = [c for c in batch if not c.future.done()]  # a caller gone (cancelled) is not sent
        if live:
            self._track(self._send(live))

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` on a task of its own, held until done so that `close` can cancel it."""
        task = asyncio.create_task(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        guarded = self._min_replicas > 0 and any(c.write for c in batch)
        try:
            pipe = self._client.pipeline(transaction=False)
            for call in batch:
                pipe.execute_command(*call.args)
            if guarded:
                pipe.execute_command("WAIT", self._min_replicas, self._replica_timeout_ms)
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for call in batch:
                _fail(call, RedisError("the store is closing"))
            raise
        except Exception as exc:
            for call in batch:
                _fail(call, exc)
            return
        not_replicated: Exception | None = None
        if guarded:
            copies = replies.pop()
            not_replicated = copies if isinstance(copies, Exception) else replication_shortfall(
                int(copies), self._min_replicas, self._replica_timeout_ms)
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError) and call.script is not None:
                # Loaded and sent again on its own (the client's Script does both; its guard waits too).
                self._spawn_alone(call)
            elif isinstance(reply, Exception):
                _fail(call, reply)
            elif not_replicated is not None and call.write:
                _fail(call, not_replicated)
            elif not call.future.done():
                call.future.set_result(reply)

    def _spawn_alone(self, call: _Call) -> None:
        async def alone() -> None:
            try:
                reply = await call.script(args=list(call.args[3:]), client=self._client)
            except asyncio.CancelledError:
                _fail(call, RedisError("the store is closing"))
                raise
            except Exception as exc:
                _fail(call, exc)
                return
            if not call.future.done():
                call.future.set_result(reply)

        self._track(alone())


def _fail(call: _Call, exc: BaseException) -> None:
    if not call.future.done():
        call.future.set_exception(exc)
