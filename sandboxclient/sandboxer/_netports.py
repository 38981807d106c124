"""The host ports a sandbox publishes, held by the sandboxer while the sandbox lives.

A published port's host socket is bound (and, for TCP, listening) by the sandboxer for as
long as the sandbox has its network, so that nothing else on the host takes the port its
DNAT rule forwards; binding it is also how a port already taken, or a host address that is
not this host's, is found out before anything is set up.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field

from .._facts._network import PortMapping
from .._serve._refusals import invalid_argument

__all__ = ("Holders", "hold")


@dataclass
class Holders:
    """The sockets holding one sandbox's published ports."""

    sockets: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        """Let every port go."""
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def hold(port: PortMapping, index: int) -> tuple[socket.socket, int]:
    """A socket bound to the mapping's host address and port (listening for TCP), and the
    port; INVALID_ARGUMENT naming the field when the port is taken or the address not local."""
    kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.bind((port.host_ip, port.host_port or 0))
        if kind == socket.SOCK_STREAM:
            sock.listen(1)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise invalid_argument(
                f"ports[{index}].host_port: {port.protocol} port {port.host_port} on "
                f"{port.host_ip} is already taken"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise invalid_argument(
                f"ports[{index}].host_ip {port.host_ip} is not an address of this host"
            ) from None
        raise invalid_argument(f"ports[{index}]: cannot bind {port.host_ip}: {exc}") from None
    return sock, int(sock.getsockname()[1])
