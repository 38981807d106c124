"""What a Create or Update carries besides the spec, and what each sandboxer refuses of it.

A sandbox's runtime (its name and options) and a Create request's ``options``,
``annotations``, rootfs mounts and netns path each ask the sandboxer for something. What a
sandboxer cannot do, and would otherwise drop without a word, it refuses with
INVALID_ARGUMENT, naming the field, so that a request never silently means less than it
says:

- both refuse a runtime other than runc's (``io.containerd.runc.v2``, or none named): any
  other (Kata, gVisor...) promises an isolation of its own that neither gives. Under runc
  what a sandbox gets is what its spec says, and the process sandboxer refuses every spec
  field it cannot honour, so runc's name (the one containerd's clients send by default)
  asks it for nothing more;
- both refuse Create ``options`` that carry anything (an empty value, such as a packed
  ``google.protobuf.Empty``, asks for nothing): neither acts on any;
- the isolating sandboxer applies runtime options (its container's runc options, checked
  by containerd and the shim), ``annotations`` (added to the spec), rootfs mounts and the
  netns path; ``--isolation none`` refuses all four: its sandboxes are host processes, on
  the host's ``/`` and in its network, with no runtime and no spec to give them to.

Extensions are the client's metadata, as labels are: kept with the sandbox, acted on by
neither.
"""

from __future__ import annotations

from typing import Final

from .._facts._golang import go_quote
from .._facts._network import NETWORK_ANNOTATION
from .._serve._refusals import invalid_argument
from .._wire._pb import AnyPb, SandboxPb, sandbox_pb
from ._pods import RUNC
from ._spec import decode_spec

__all__ = ("RUNTIMES", "asks_for", "check_create", "check_sandbox")

RUNTIMES: Final = ("", RUNC)
"""The runtime names either sandboxer takes: none, or runc's."""

_ELSEWHERE: Final = {
    "container": "use containerd's shim sandboxer for a runtime of its own",
    "none": "its sandboxes are host processes with the sandboxer's privileges: use the "
    "isolating sandboxer, or containerd's shim sandboxer for a runtime of its own",
}
_HOST: Final = "its sandboxes are host processes, on the host's / and in its network"


def asks_for(value: AnyPb | None) -> bool:
    """Whether an Any carries anything (an empty value, such as a packed Empty, does not)."""
    return value is not None and bool(value.value)


def check_sandbox(sandbox: SandboxPb, isolation: str) -> None:
    """Refuse a sandbox record whose runtime asks for what the sandboxer of ``isolation``
    ("container" or "none") does not do."""
    runtime = sandbox.runtime
    name = runtime.name if runtime is not None else ""
    if name not in RUNTIMES:
        raise invalid_argument(
            f"runtime.name {go_quote(name)} is not supported with --isolation {isolation}: "
            f"this sandboxer honours only {RUNC} (or no name); {_ELSEWHERE[isolation]}"
        )
    if isolation == "none" and runtime is not None and asks_for(runtime.options):
        raise invalid_argument(f"runtime.options are not enforced with --isolation none: {_HOST}")
    if isolation == "none" and sandbox.spec is not None:
        annotations = (decode_spec(sandbox.spec) or {}).get("annotations")
        if isinstance(annotations, dict) and NETWORK_ANNOTATION in annotations:
            raise invalid_argument(
                f"network (any, even 'none') is not enforced with --isolation none: {_HOST}"
            )


def check_create(message: sandbox_pb.ControllerCreateRequest, isolation: str) -> None:
    """Refuse the fields of a Create request the sandboxer of ``isolation`` would drop."""
    if asks_for(message.options):
        raise invalid_argument(
            f"options are not supported with --isolation {isolation}: this sandboxer acts "
            "on none, and would drop them"
        )
    if isolation != "none":
        return
    if message.rootfs:
        raise invalid_argument(f"rootfs mounts are not enforced with --isolation none: {_HOST}")
    if message.netns_path:
        raise invalid_argument(f"netns_path is not enforced with --isolation none: {_HOST}")
    if message.annotations:
        raise invalid_argument(
            "annotations are not enforced with --isolation none: its sandboxes have no OCI "
            "runtime to pass them to"
        )
