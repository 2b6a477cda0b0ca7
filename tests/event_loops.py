"""Running a coroutine from a test whatever else runs in the test process."""

import asyncio
from concurrent.futures import ThreadPoolExecutor


def run_in_own_loop(coroutine):
    """asyncio.run in a thread of its own: Playwright's sync API (the browser tests, earlier in the same pytest
    process) leaves an event loop running in the main thread, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-event-loop") as pool:
        return pool.submit(asyncio.run, coroutine).result()
