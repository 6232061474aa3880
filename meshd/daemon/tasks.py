"""How a service's work runs. Tasks on the event loop are kept and stopped one way
(``Tasks``): each is held until it is done (so none is collected while it runs), one that
fails is logged with its error, and at the service's close they are cancelled or let
finish, and awaited either way. Blocking calls go to the node's kernel thread, in order
(``Kernel``: meshd.daemon.node.Node.kernel)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from meshd.log import event

T = TypeVar("T")
Kernel = Callable[..., Awaitable[Any]]  # fn, *args: run on the kernel thread, awaited


class Tasks:
    def __init__(self, owner: str) -> None:
        self.owner = owner  # named in the log when one fails
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            event(
                "task.failed",
                logging.ERROR,
                owner=self.owner,
                task=task.get_coro().__qualname__,  # type: ignore[union-attr]
                error=repr(error),
            )

    async def wait(self) -> None:
        """Let what runs finish (an answer being stored, say)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel what runs and wait until it has stopped."""
        for task in self._running:
            task.cancel()
        await self.wait()
