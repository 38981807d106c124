"""The names containerd's API fixes on the wire, which the client, the sandboxer and the
stand-in must spell alike: the namespace's metadata key and the type URLs of the payloads
they exchange."""

from __future__ import annotations

from typing import Final

__all__ = ("EMPTY_TYPE_URL", "NAMESPACE_HEADER", "RUNTIME_SPEC_TYPE_URL")

RUNTIME_SPEC_TYPE_URL: Final = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
"""The type URL containerd's typeurl gives an OCI runtime spec, carried as JSON."""

EMPTY_TYPE_URL: Final = "google.protobuf.Empty"
"""containerd's typeurl names protobuf payloads by their bare full name."""

NAMESPACE_HEADER: Final = "containerd-namespace"
"""The gRPC metadata key containerd carries the namespace in."""

LEASE_HEADER: Final = "containerd-lease"
"""The gRPC metadata key containerd carries a call's lease in."""
