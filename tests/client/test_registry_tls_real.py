"""Pull and push through a real containerd and a registry served over TLS with a private CA
(made by the test) and htpasswd basic auth, trusted through a ``hosts_dir`` of
containerd's ``hosts.toml`` files."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sandboxclient import Client, UnavailableError
from sandboxclient.testing._images import build_pause_archive
from tests.support.backends import RealContainerd, new_namespace
from tests.support.ctr import ctr_ids
from tests.support.registry import LocalRegistry, registry_problem
from tests.support.tls import make_certificates, openssl_problem

pytestmark = [pytest.mark.anyio, pytest.mark.real]

LOCAL = "example.test/tls/busybox:1"
USER, SECRET = "bob", "tls-s3cret-do-not-log"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = registry_problem() or openssl_problem()
    if reason is not None:
        pytest.skip(reason)
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def registry(certificates: Path) -> Iterator[LocalRegistry]:
    tls = make_certificates(certificates / "registry")
    served = LocalRegistry(user=USER, password=SECRET, tls=tls)
    try:
        yield served
    finally:
        served.close()


def hosts_dir(root: Path, host: str, server: str, ca: Path) -> str:
    """A hosts directory telling containerd to reach ``host`` at ``https://<server>``,
    trusting ``ca``."""
    directory = root / host
    directory.mkdir(parents=True)
    (directory / "hosts.toml").write_text(
        f'server = "https://{server}"\n\n[host."https://{server}"]\n  ca = "{ca}"\n'
    )
    return str(root)


@pytest.fixture
async def client(
    real: RealContainerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Client]:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    async with Client(real.daemon.address, namespace=new_namespace(), timeout=30) as c:
        await c.import_image(io.BytesIO(build_pause_archive(LOCAL)), unpack=False)
        yield c


async def test_a_registry_with_a_private_ca_is_trusted_through_hosts_dir(
    real: RealContainerd,
    client: Client,
    registry: LocalRegistry,
    certificates: Path,
    tmp_path: Path,
) -> None:
    ref = f"{registry.host}/test/busybox:1"
    credentials = (USER, SECRET)
    ca = certificates / "registry" / "ca.crt"
    # A hosts.toml trusting another CA: the registry's certificate is checked, and refused.
    stranger = make_certificates(certificates / "stranger")
    wrong = hosts_dir(tmp_path / "wrong", registry.host, registry.host, stranger.ca)
    with pytest.raises(UnavailableError, match=r"not trusted: .*hosts_dir.*x509") as refused:
        await client.push(ref, source=LOCAL, credentials=credentials, hosts_dir=wrong)
    assert SECRET not in str(refused.value)

    trusted = hosts_dir(tmp_path / "hosts", registry.host, registry.host, ca)
    await client.push(ref, source=LOCAL, credentials=credentials, hosts_dir=trusted)
    local = await client.get_image(LOCAL)
    await client.delete_image(LOCAL, sync=True)

    image = await client.pull(ref, credentials=credentials, hosts_dir=trusted)
    assert image.target.digest == local.target.digest
    assert (await image.config()).args == ("/bin/sleep", "infinity")
    container = await client.new_container("over-tls", image=ref)
    try:
        task = await container.new_task()
        await task.start()
        assert (await task.run("sh", "-c", "echo tls")).stdout == b"tls\n"
    finally:
        await container.delete(force=True)

    # A name that resolves nowhere, served by the registry through its hosts.toml (as a
    # mirror is); without the hosts directory it cannot be reached.
    alias = "registry.sandboxclient.test"
    mirror = hosts_dir(tmp_path / "mirror", alias, registry.host, ca)
    with pytest.raises(UnavailableError, match=f"registry of {alias}/test/busybox:1 unreachable"):
        await client.pull(f"{alias}/test/busybox:1", credentials=credentials, timeout=20)
    pulled = await client.pull(f"{alias}/test/busybox:1", credentials=credentials, hosts_dir=mirror)
    assert pulled.target.digest == local.target.digest
    assert ctr_ids(real, client.namespace, "leases") == []
