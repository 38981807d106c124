"""The fixtures the package ships for users' own tests, loaded only when asked for."""

from __future__ import annotations

import pytest

from sandboxclient.testing._locate import containerd_required

pytest_plugins = ["pytester"]

_TESTS = """
import asyncio
import os

from sandboxclient import Client, ContainerdVersion


def test_the_stand_in(fake_containerd):
    async def main():
        async with Client(fake_containerd.address) as client:
            await client.new_sandbox("a1", runtime="io.containerd.runc.v2")
            return [s.id for s in await client.list_sandboxes()]

    assert asyncio.run(main()) == ["a1"]
    assert fake_containerd.sandbox_ids("default") == ["a1"]
    assert os.path.exists(fake_containerd.address)


def test_a_real_daemon(containerd):
    async def main():
        async with Client(containerd.address, sandboxer="pysandbox") as client:
            return (await client.version()).parsed

    # Release builds report "v2.3.4", Debian's "2.1.9+unknown".
    assert asyncio.run(main()) >= ContainerdVersion(2, 0, 0)
"""


def test_the_fixtures_work_when_asked_for(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["sandboxclient.testing.pytest_plugin"]\n')
    pytester.makepyfile(test_user=_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 1
    if containerd_required():
        assert outcomes.get("passed", 0) == 2, result.stdout.str()
    if outcomes.get("skipped"):
        # Without a usable containerd the reason says what to do about it.
        assert "install containerd" in result.stdout.str() or "root" in result.stdout.str()


def test_the_fixtures_are_not_loaded_unasked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert "fixture 'fake_containerd' not found" in result.stdout.str()


_RELEASE_TESTS = """
import asyncio

import pytest

from sandboxclient import Client


def reported(fake):
    async def main():
        async with Client(fake.address) as client:
            return (await client.version()).parsed

    return asyncio.run(main())


def test_the_newest_by_default(fake_containerd):
    assert (reported(fake_containerd).major, reported(fake_containerd).minor) == (2, 3)


@pytest.mark.fake_containerd_release("2.1")
def test_a_release_by_marker(fake_containerd):
    assert fake_containerd.version.release[:2] == (2, 1)
    assert (reported(fake_containerd).major, reported(fake_containerd).minor) == (2, 1)


@pytest.mark.parametrize("fake_containerd", ["2.0", "v2.2.4"], indirect=True)
def test_releases_by_parameter(fake_containerd, request):
    asked = request.node.callspec.params["fake_containerd"]
    minor = {"2.0": 0, "v2.2.4": 2}[asked]
    assert (reported(fake_containerd).major, reported(fake_containerd).minor) == (2, minor)


@pytest.mark.fake_containerd_release("1.7")
def test_an_unknown_release(fake_containerd):
    pass
"""


def test_the_stand_in_answers_as_the_release_asked_for(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["sandboxclient.testing.pytest_plugin"]\n')
    pytester.makepyfile(test_releases=_RELEASE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*ValueError: containerd '1.7' is not a release line (known: 2.0, *"]
    )
