"""A namespace's labels, set as another containerd client would set them."""

from __future__ import annotations

from grpclib.client import Channel

from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._wire._pb import FieldMaskPb, namespaces_pb
from tests.support.backends import Backend

__all__ = ("DEFAULT_SANDBOXER_LABEL", "set_default_sandboxer")

DEFAULT_SANDBOXER_LABEL = "containerd.io/defaults/sandboxer"


async def set_default_sandboxer(backend: Backend, value: str) -> None:
    """Set (or, empty, remove) the namespace's default sandboxer label, and check it took."""
    label = DEFAULT_SANDBOXER_LABEL
    async with Channel(path=backend.address) as channel:
        stub = namespaces_pb.NamespacesStub(
            channel, metadata={NAMESPACE_HEADER: backend.namespace}, timeout=20
        )
        await stub.update(
            namespaces_pb.UpdateNamespaceRequest(
                namespace=namespaces_pb.Namespace(name=backend.namespace, labels={label: value}),
                update_mask=FieldMaskPb(paths=[f"labels.{label}"]),
            )
        )
        got = await stub.get(namespaces_pb.GetNamespaceRequest(name=backend.namespace))
        assert got.namespace is not None
        assert got.namespace.labels.get(label, "") == value
