"""What the handles at the package's root are built on, none of it a handle itself: the
connection every call goes through (``_connection``), the shared waits for an exit
(``_wait``), the sandbox and container stores' records (``_sandbox_store``,
``_container_store``), a process's stream arguments and the asyncio side of its pipes
(``_stream_args``, ``_pipes``), a sandbox's own output (``_sandbox_io``), ``new_sandbox``'s
options and limits and what ``Sandbox.update`` writes (``_options``, ``_limits``,
``_sandbox_record``), a container's root from an image (``_rootfs``), and what a daemon and
a sandboxer say of themselves (``_server_info``, ``_version``, ``_sandboxer_handlers``).

It sits between the handles and the wire, so that the root reads as containerd's
``client/`` does, one module per resource, and this plumbing stays out of sight below it.
It never imports a handle: only itself, the wire, the records, the public ``errors`` and
``oci``, the shared facts, and the subpackages below the handles that import no handle
either (``_imageops``, ``_members``, which import it back: they sit beside it). The few
public records made here (a daemon's and a sandboxer's versions and handlers, the exit
channel, the client's state and default sentinel) are imported from ``sandboxclient``.
"""
