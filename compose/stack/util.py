"""Small helpers shared by the stack modules."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_coro(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run an async client call from synchronous stack code.

    The stack is driven from a sync CLI and sync tests, but also from inside running event loops
    (async tests, the demo); there ``asyncio.run`` is not allowed, so a worker thread gets its own loop.
    """

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, bounded()).result()
