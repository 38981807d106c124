"""Image records on both backends: the stand-in answers as containerd 2.1.9 does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

import pytest

from sandboxclient import (
    AlreadyExistsError,
    Client,
    Image,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from sandboxclient.testing import FakeContainerd
from tests.support.backends import Backend
from tests.support.images import DIGEST, MANIFEST, seed

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fake_client(fake: FakeContainerd) -> AsyncIterator[Client]:
    async with Client(fake.address, namespace="images", timeout=10) as c:
        yield c


async def test_records_are_listed_read_tagged_and_deleted(backend: Backend, client: Client) -> None:
    await seed(backend, "example.test/app:1", {"team": "a"})
    await seed(backend, "example.test/other:1")

    image = await client.get_image("example.test/app:1")
    assert isinstance(image, Image)
    assert (image.name, dict(image.labels)) == ("example.test/app:1", {"team": "a"})
    assert (image.target.media_type, image.target.digest, image.target.size) == (
        MANIFEST,
        DIGEST,
        123,
    )
    assert image.created_at is not None
    assert image.created_at.tzinfo is UTC
    assert image.updated_at == image.created_at

    names = [i.name for i in await client.list_images()]
    assert names == ["example.test/app:1", "example.test/other:1"]
    assert [i.name for i in await client.list_images("labels.team==a")] == ["example.test/app:1"]
    assert [i.name for i in await client.list_images("name==nope")] == []
    assert [i.name for i in await client.list_images("target.digest==" + DIGEST)] == names

    tagged = await client.tag_image("example.test/app:1", "example.test/app:latest")
    assert (tagged.name, tagged.target, dict(tagged.labels)) == (
        "example.test/app:latest",
        image.target,
        {"team": "a"},
    )
    with pytest.raises(AlreadyExistsError) as taken:
        await client.tag_image("example.test/other:1", "example.test/app:latest")
    assert taken.value.message == 'image "example.test/app:latest": already exists'

    await client.delete_image("example.test/app:1")
    assert [i.name for i in await client.list_images()] == [
        "example.test/app:latest",
        "example.test/other:1",
    ]
    with pytest.raises(NotFoundError) as gone:
        await client.delete_image("example.test/app:1")
    assert gone.value.message == 'image "example.test/app:1": not found'
    with pytest.raises(NotFoundError):
        await client.get_image("example.test/app:1")
    with pytest.raises(NotFoundError) as missing:
        await client.tag_image("example.test/app:1", "example.test/x:1")
    assert missing.value.message == 'image "example.test/app:1": not found'


async def test_a_bad_filter_is_the_daemons_refusal(client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        await client.list_images("name==")
    assert refused.value.message == (
        "filters: parse error: [name==]: expected value or quoted: invalid argument: "
        "invalid argument"
    )


async def test_bad_arguments_are_refused_before_any_call(fake_client: Client) -> None:
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        await fake_client.get_image("")
    with pytest.raises(TypeError, match="filters must be strings"):
        await fake_client.list_images(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="new name"):
        await fake_client.tag_image("x", "")
    with pytest.raises(TypeError, match="credentials must be"):
        await fake_client.pull("example.test/a:1", credentials=("user", 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="platforms must be"):
        await fake_client.pull("example.test/a:1", platforms=["linux/amd64"])  # type: ignore[list-item]


async def test_the_stand_in_cannot_pull_or_push_and_says_why(
    fake: FakeContainerd, fake_client: Client
) -> None:
    """The stand-in has no registry client: a pull or push is UNIMPLEMENTED, naming that
    reason, and leaves nothing."""
    with pytest.raises(UnimplementedError, match="has no registry client") as refused:
        await fake_client.pull("example.test/a:1")
    assert "import an archive instead" in refused.value.message
    await seed(Backend("fake", fake.address, "shim", "images", fake=fake), "example.test/a:1")
    with pytest.raises(UnimplementedError, match="has no registry client"):
        await fake_client.push("example.test/a:1")
    assert [i.name for i in await fake_client.list_images()] == ["example.test/a:1"]
