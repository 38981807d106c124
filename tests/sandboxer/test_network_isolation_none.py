"""The process sandboxer (``--isolation none``) refuses every network option: its sandboxes
are host processes, in the host's network, whatever they ask."""

from __future__ import annotations

import pytest
from grpclib.const import Status

from sandboxclient._facts._network import NETWORK_ANNOTATION
from sandboxclient.sandboxer import ProcessSandboxer
from sandboxclient.sandboxer.__main__ import main, parser
from tests.sandboxer.test_sandboxer_security import controller_stub, create_request
from tests.support.helpers import expect_error

pytestmark = pytest.mark.anyio


async def test_isolation_none_refuses_every_network_option(workdir: str) -> None:
    async with controller_stub(ProcessSandboxer(), workdir) as stub:
        for value in ("none", "bridge", '{"mode": "bridge", "ports": []}'):
            spec = {"process": {"args": ["true"]}, "annotations": {NETWORK_ANNOTATION: value}}
            message = await expect_error(
                stub.create(create_request("n1", spec)), Status.INVALID_ARGUMENT
            )
            assert "network (any, even 'none') is not enforced with --isolation none" in message


def test_the_cni_flags_need_the_isolating_sandboxer() -> None:
    args = parser().parse_args(
        ["--socket", "s", "--cni-conf-dir", "/etc/x", "--cni-bin-dir", "/a", "--cni-bin-dir", "/b"]
    )
    assert (args.cni_conf_dir, args.cni_bin_dir) == ("/etc/x", ["/a", "/b"])
    with pytest.raises(SystemExit, match="--cni-conf-dir and --cni-bin-dir need --isolation"):
        main(["--socket", "s", "--isolation", "none", "--cni-bin-dir", "/a"])
