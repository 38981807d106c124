"""The CRI plugin's record of a pod sandbox, which containerd's podsandbox controller reads
before it starts one: tests that drive that controller write it themselves."""

from __future__ import annotations

import json
import uuid
from typing import Final

__all__ = ("CRI_METADATA_URL", "cri_metadata")

CRI_METADATA_URL: Final = "github.com/containerd/cri/pkg/store/sandbox/Metadata"
"""The extension name the podsandbox controller looks the record up by."""

HOST_NETWORK: Final = 2
"""NamespaceMode.NODE: the pod shares the host's network, so no CNI is needed."""


def cri_metadata(sandbox_id: str, name: str) -> bytes:
    """The CRI plugin's record of a pod sandbox, which the podsandbox controller reads."""
    return json.dumps(
        {
            "Version": "v1",
            "Metadata": {
                "ID": sandbox_id,
                "Name": name,
                "Config": {
                    "metadata": {"name": name, "uid": uuid.uuid4().hex, "namespace": "default"},
                    "linux": {"security_context": {"namespace_options": {"network": HOST_NETWORK}}},
                },
            },
        }
    ).encode()
