"""``sandboxctl cp``: a file or tree into or out of a sandbox, as ``docker cp`` takes it.

One side is ``ID:PATH`` (a sandbox and an absolute path in it), the other a local path: from
the sandbox, ``files.download`` into the local directory; into it, ``files.upload`` into
the sandbox's directory. An argument is a sandbox's when what comes before its first ``:``
is non-empty and holds no ``/`` (so ``./a:b`` and ``/x:y`` are local), as with docker.
"""

from __future__ import annotations

from .._client import Client
from ._base import Outcome

__all__ = ("cmd_cp", "split_target")


def split_target(text: str) -> tuple[str | None, str]:
    """``(sandbox id, path)`` for ``ID:PATH``, ``(None, path)`` for a local path."""
    head, sep, tail = text.partition(":")
    if sep and head and "/" not in head:
        return head, tail
    return None, text


async def cmd_cp(client: Client, src: str, dst: str) -> Outcome:
    """Copy ``src`` to ``dst``; exactly one of them names a sandbox."""
    src_id, src_path = split_target(src)
    dst_id, dst_path = split_target(dst)
    if (src_id is None) == (dst_id is None):
        raise ValueError(
            "cp copies between a sandbox and this host: give exactly one of SRC and DST as ID:PATH"
        )
    if src_id is not None:
        sb = await client.load_sandbox(src_id)
        local = await sb.files.download(src_path, dst_path)
        data = {"id": src_id, "from": src_path, "to": str(local)}
        return Outcome(data, f"{src}\t->\t{local}")
    assert dst_id is not None
    sb = await client.load_sandbox(dst_id)
    remote = await sb.files.upload(src_path, dst_path)
    data = {"id": dst_id, "from": src_path, "to": remote}
    return Outcome(data, f"{src}\t->\t{dst_id}:{remote}")
