"""A sandbox controller written in Python, for containerd's proxy plugins.

containerd 2.x forwards ``containerd.services.sandbox.v1.Controller`` calls for a sandboxer
named in its config (``[proxy_plugins.NAME] type = "sandbox"``) to a gRPC server on a unix
socket. Subclass :class:`SandboxController`, or use one of the two this package ships, and
run it with :func:`serve`, or from the command line (``--help`` says what each isolates)::

    python -m sandboxclient.sandboxer --socket /run/pysandbox.sock --state-dir ./pysandbox-state

- :class:`ContainerSandboxer` (the default, ``--isolation container``) runs each sandbox as a
  runc container and task that it creates through containerd (``--containerd``), from the
  sandbox's OCI spec over containerd's defaults: its own namespaces, root filesystem, user,
  capabilities, seccomp profile and limits. The containers share the host's kernel.
- :class:`ProcessSandboxer` (``--isolation none``) runs each sandbox as a plain process on
  this host with the server's privileges: it isolates nothing, and refuses every spec field
  it cannot honour.

With a state directory the sandboxes outlive the sandboxer: killed and started again over the
same directory, it takes them back and still answers each Wait with the real exit status.
The socket is mode 0600 whatever the umask; the state directory must be the sandboxer's own
(:class:`StateDirError` otherwise).

The request and response classes a controller's methods take and return, and the types they
carry (``Sandbox``, ``Mount``, ``Platform``, ``Metric``, ``Any``), are in
:mod:`sandboxclient.sandboxer.messages`::

    from sandboxclient.sandboxer import SandboxController, messages


    class Mine(SandboxController):
        async def start(
            self, message: messages.ControllerStartRequest
        ) -> messages.ControllerStartResponse:
            return messages.ControllerStartResponse(sandbox_id=message.sandbox_id, pid=1)

:class:`CallLog` counts the calls a server receives as they arrive (``serve(..., calls=)``).
"""

from __future__ import annotations

from .._serve._calls import CallLog
from .._serve._server import current_metadata, current_namespace
from . import messages
from ._base import SandboxController, serve
from ._isolated import DEFAULT_CONTAINERD, ContainerSandboxer
from ._process import ProcessSandboxer
from ._state import StateDirBusyError, StateDirError

__all__ = (
    "DEFAULT_CONTAINERD",
    "CallLog",
    "ContainerSandboxer",
    "ProcessSandboxer",
    "SandboxController",
    "StateDirBusyError",
    "StateDirError",
    "current_metadata",
    "current_namespace",
    "messages",
    "serve",
)
