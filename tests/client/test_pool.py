"""``SandboxPool``: started sandboxes handed out at once, never reused, replaced when they die
idle, and all shut down when the pool or its Client closes, on both backends.

"At once" is checked on the server's side: handing out an idle sandbox makes no Controller
call. A test that needs the pool to have noticed something waits for the call it makes in
answer (the replacement's Create) or for the pool's own ``ready()``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from sandboxclient import (
    Client,
    ClientClosedError,
    CommandTimeoutError,
    NotFoundError,
    SandboxPool,
)
from sandboxclient.errors import WarmUpError
from tests.support.backends import Backend
from tests.support.constants import RUNTIME
from tests.support.helpers import client_tasks
from tests.support.slowdown import slowed

pytestmark = pytest.mark.anyio

TEMPLATE: dict[str, Any] = {"runtime": RUNTIME}


def pool_tasks() -> list[asyncio.Task[Any]]:
    """The pools' keeper tasks still running."""
    return [t for t in client_tasks() if t.get_name().startswith("sandboxclient-pool-")]


async def keepers_ended() -> None:
    """Return once every pool keeper task has ended (after a failed creation none starts
    until the next ``acquire()``)."""
    tasks = pool_tasks()
    if tasks:
        await asyncio.wait(tasks)


async def ids(client: Client) -> set[str]:
    return {info.id for info in await client.list_sandboxes()}


async def yield_until(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds: for states reached without I/O."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_a_ready_pool_hands_out_without_a_call_and_never_twice(
    backend: Backend, client: Client
) -> None:
    async with SandboxPool(client, size=1, max_size=2, template=TEMPLATE) as pool:
        await pool.ready()
        (first_id,) = await ids(client)
        starts = backend.calls("Controller/Start")
        async with pool.acquire() as sb:
            # Handed out from the idle ones: nothing asked of the controller for it.
            assert backend.calls("Controller/Start") == starts
            assert sb.id == first_id
            assert sb.pid
            assert (await sb.run("echo", "hi")).stdout == b"hi\n"
            # Nothing started while the caller works.
            assert pool.stats().starting == 0
            assert pool.stats().in_use == 1
        # Released: replaced in the background, and shut down.
        await backend.wait_for_call("Controller/Start", starts + 1)
        await pool.ready()
        assert pool.stats().in_use == 0
        assert pool.stats().idle == 1
        async with pool.acquire() as again:
            assert again.id != first_id
            assert (await again.run("echo", "next")).stdout == b"next\n"
        assert pool.stats().made >= 2
    assert await ids(client) == set()
    assert pool_tasks() == []


async def test_a_sandbox_that_died_idle_is_replaced_not_handed_out(
    backend: Backend, client: Client
) -> None:
    async with SandboxPool(client, size=2, template=TEMPLATE) as pool:
        await pool.ready()
        victim = sorted(await ids(client))[0]
        creates = backend.calls("Controller/Create")
        await (await client.load_sandbox(victim)).stop()
        # The pool's answer to the death: a replacement's Create.
        await backend.wait_for_call("Controller/Create", creates + 1)
        await pool.ready()
        assert pool.stats().died_idle == 1
        async with pool.acquire() as a, pool.acquire() as b:
            assert victim not in {a.id, b.id}
            assert (await a.run("echo", "alive")).stdout == b"alive\n"
    assert await ids(client) == set()


async def test_acquire_waits_within_max_size_and_gets_a_fresh_sandbox(
    backend: Backend, client: Client
) -> None:
    async with SandboxPool(client, size=1, max_size=1, template=TEMPLATE) as pool:
        await pool.ready()
        async with pool.acquire() as held:
            waiting = asyncio.ensure_future(_acquire_id(pool))
            await yield_until(lambda: pool.stats().waiting == 1)
            # At max_size: nothing more starts while one is held.
            assert pool.stats().starting == 0
            with pytest.raises(TimeoutError):
                async with pool.acquire(timeout=0.01):
                    pass
            assert pool.stats().waiting == 1
        # Released: shut down, and only then its replacement goes to the waiter.
        assert await waiting != held.id
        assert held.id not in await ids(client)
    assert await ids(client) == set()


async def _acquire_id(pool: SandboxPool) -> str:
    async with pool.acquire() as sb:
        return sb.id


async def test_closing_after_a_cancelled_acquire_leaves_nothing(
    backend: Backend, client: Client
) -> None:
    pool = SandboxPool(client, size=0, max_size=1, template=TEMPLATE)
    starts = backend.calls("Controller/Start")
    taker = asyncio.ensure_future(_acquire_id(pool))
    await backend.wait_for_call("Controller/Start", starts + 1)
    taker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taker
    assert pool.stats().waiting == 0
    await pool.aclose()
    await pool.aclose()  # idempotent
    assert await ids(client) == set()
    assert pool_tasks() == []
    with pytest.raises(ClientClosedError, match="pool is closed"):
        async with pool.acquire():
            pass


async def test_closing_the_pool_shuts_down_a_sandbox_in_use_and_ends_waiters(
    client: Client,
) -> None:
    pool = SandboxPool(client, size=1, max_size=1, template=TEMPLATE)
    async with pool.acquire() as held:
        waiting = asyncio.ensure_future(_acquire_id(pool))
        await yield_until(lambda: pool.stats().waiting == 1)
        await pool.aclose()
        with pytest.raises(ClientClosedError, match="pool was closed"):
            await waiting
        assert held.id not in await ids(client)
    assert pool_tasks() == []


async def test_closing_the_client_shuts_down_its_pools(backend: Backend, client: Client) -> None:
    other = backend.client()
    pool = SandboxPool(other, size=2, template=TEMPLATE)
    await pool.ready()
    assert len(await ids(client)) == 2
    await other.aclose()
    assert await ids(client) == set()
    assert pool_tasks() == []
    with pytest.raises(ClientClosedError, match="client is closed"):
        async with pool.acquire():
            pass


async def test_a_failing_template_fails_the_acquire_and_does_not_loop(client: Client) -> None:
    pool = SandboxPool(client, size=2, template={**TEMPLATE, "sandboxer": "nope"})
    with pytest.raises(NotFoundError, match="nope"):
        async with pool.acquire():
            pass
    # No retry on its own: the next acquire asks again. The other start ends on the
    # controller's answer, and no keeper starts once one failed: their ends are awaited.
    await keepers_ended()
    assert pool.stats().starting == 0
    failed = pool.stats().failed
    assert failed >= 1
    with pytest.raises(NotFoundError):
        await pool.ready()
    await pool.aclose()
    assert await ids(client) == set()


async def test_a_warm_up_runs_in_each_sandbox_before_it_is_handed_out(client: Client) -> None:
    mark = f"/tmp/pool-warmed-{uuid.uuid4().hex}"
    warm_up = ("sh", "-c", f"echo warmed > {mark}")
    async with SandboxPool(client, size=1, template=TEMPLATE, warm_up=warm_up) as pool:
        async with pool.acquire() as sb:
            try:
                assert (await sb.run("cat", mark)).stdout == b"warmed\n"
            finally:
                await sb.run("rm", "-f", mark)  # the stand-in's commands share the host's /tmp
        assert pool.stats().failed == 0
    assert await ids(client) == set()


async def test_a_warm_up_that_does_not_end_is_cut_at_the_client_s_deadline(
    backend: Backend,
) -> None:
    async with backend.client(timeout=slowed(3.0)) as client:
        pool = SandboxPool(client, size=1, template=TEMPLATE, warm_up=("sleep", "600"))
        with pytest.raises(CommandTimeoutError, match="sleep 600"):
            async with pool.acquire():
                pass
        await keepers_ended()
        assert pool.stats().failed == 1
        await pool.aclose()
        assert await ids(client) == set()


async def test_a_failing_warm_up_fails_the_acquire_and_leaves_no_sandbox(client: Client) -> None:
    pool = SandboxPool(
        client, size=1, template=TEMPLATE, warm_up=("sh", "-c", "echo no >&2; exit 3")
    )
    with pytest.raises(WarmUpError, match=r"warm_up command sh -c .* exited with 3 .*no") as info:
        async with pool.acquire():
            pass
    assert info.value.returncode == 3
    assert info.value.stderr == b"no\n"
    assert info.value.command[0] == "sh"
    await keepers_ended()
    assert pool.stats().failed == 1
    assert pool.stats().made == 0
    await pool.aclose()
    assert await ids(client) == set()


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"size": -1}, ValueError, "size="),
        ({"size": 1.5}, TypeError, "size="),
        ({"size": True}, TypeError, "size="),
        ({"size": 3, "max_size": 2}, ValueError, "max_size="),
        ({"size": 0, "max_size": 0}, ValueError, "max_size="),
        ({"template": {"lables": {}}}, TypeError, "'lables'"),
        ({"template": {"sandbox_id": "x"}}, TypeError, "names its sandboxes"),
        ({"template": [("runtime", RUNTIME)]}, TypeError, "template="),
        ({"prefix": "bad prefix"}, ValueError, "prefix="),
        ({"prefix": "p" * 60}, ValueError, "prefix="),
        ({"warm_up": "true"}, TypeError, "warm_up="),
        ({"warm_up": ()}, ValueError, "warm_up="),
        ({"warm_up": ("true", 1)}, TypeError, "warm_up="),
    ],
)
async def test_bad_pool_options_are_refused_by_name(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    async with Client("/nonexistent.sock") as client:
        with pytest.raises(error, match=words):
            SandboxPool(client, **kwargs)


async def test_create_task_is_owned_by_the_client() -> None:
    client = Client("/nonexistent.sock")
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = client.create_task(forever(), name="sandboxclient-test")
    await started.wait()
    await client.aclose()
    assert task.cancelled()

    async def never() -> None:
        raise AssertionError("ran on a closed client")

    with pytest.raises(ClientClosedError):
        client.create_task(never())
