"""Runtime handlers: a sandbox asks for ``runtime_handler="gvisor"`` and runs on gVisor's
kernel through containerd's runc shim with runsc as its binary; what it is promised is
checked from inside, as an attacker would, and from the host. A handler the sandboxer was
not given, and what gVisor would drop, are refused by name.

The real-daemon tests need Debian's ``runsc`` (``scripts/install-runsc.sh``, run by
``make containerd``); where containerd is required (CI) they fail without it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import (
    PIPE,
    STDOUT,
    Client,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    oci,
)
from sandboxclient._cli._daemon import cmd_handlers
from sandboxclient._plumbing._options import sandbox_draft
from sandboxclient._plumbing._sandboxer_handlers import RUNTIME_HANDLER_PLUGIN_TYPE
from sandboxclient._wire._pb import introspection_pb
from sandboxclient.sandboxer._handlers import GVISOR, Handlers, RuntimeHandler, parse_handler
from sandboxclient.sandboxer._handlers_service import HandlersIntrospection
from sandboxclient.testing import GVISOR_RUNSC
from sandboxclient.testing._locate import containerd_required
from tests.support.backends import RealContainerd
from tests.support.cgroups import cpu_stats, limit_file, read_limit, sandbox_process_dir
from tests.support.constants import RUNTIME
from tests.support.ctr import shims_of
from tests.support.helpers import until
from tests.support.host import processes
from tests.support.slowdown import slowed

from .test_hardening import DOUBLING

pytestmark = pytest.mark.anyio


def _need_runsc() -> None:
    if os.access(GVISOR_RUNSC, os.X_OK):
        return
    reason = f"{GVISOR_RUNSC} not installed: run scripts/install-runsc.sh (make containerd)"
    if containerd_required():
        pytest.fail(reason)
    pytest.skip(reason)


def _runsc_processes(sandbox_id: str) -> list[int]:
    """Host pids of gVisor's processes (its kernel, its file server) for ``sandbox_id``."""
    key = sandbox_id.encode()
    return [
        pid
        for pid, argv in processes()
        if argv and argv[0].startswith(b"runsc") and any(key in a for a in argv)
    ]


def _cgroup_procs(namespace: str, sandbox_id: str) -> set[int]:
    """The host pids in the cgroup of the sandbox's own process: its memory hierarchy's on
    cgroup v1, its leaf on v2."""
    procs = sandbox_process_dir(namespace, sandbox_id) / "cgroup.procs"
    return {int(pid) for pid in procs.read_text().split()}


def _status_field(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in /proc/{pid}/status")


# -- the client's option, anywhere ----------------------------------------------------------


def test_runtime_handler_goes_in_the_spec_annotation() -> None:
    draft = sandbox_draft(
        "h1",
        runtime=None,
        runtime_options=None,
        spec=None,
        labels=None,
        extensions=None,
        sandboxer=None,
        runtime_handler="gvisor",
    )
    assert draft.spec is not None
    assert b'"io.sandboxclient.runtime-handler":"gvisor"' in draft.spec.value


@pytest.mark.parametrize(
    ("value", "error"),
    [("GVisor", ValueError), ("", ValueError), ("a_b", ValueError), (3, TypeError)],
)
async def test_a_bad_handler_name_is_refused_before_any_call(
    value: object, error: type[Exception]
) -> None:
    async with Client("/nonexistent.sock") as client:
        with pytest.raises(error, match="runtime_handler"):
            await client.new_sandbox("h1", runtime_handler=value)  # type: ignore[arg-type]


async def test_a_handler_the_spec_contradicts_is_refused() -> None:
    spec = oci.generate_spec(oci.with_runtime_handler("runc"))
    async with Client("/nonexistent.sock") as client:
        with pytest.raises(ValueError, match="give one of them"):
            await client.new_sandbox("h1", spec=spec, runtime_handler="gvisor")


# -- the sandboxer's configuration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [("gvisor", "NAME=PATH"), ("gvisor=runsc", "absolute"), ("G=/usr/bin/runsc", "handler name")],
)
def test_a_bad_handler_flag_is_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_handler(text)


def test_a_binary_that_is_neither_runc_nor_runsc_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only runc and gVisor's runsc"):
        Handlers({"odd": "/bin/true"}, str(tmp_path))


def test_a_gvisor_sandboxs_shim_is_grouped_by_the_sandboxs_own_id() -> None:
    # containerd's runc shim names its socket by its group, and at its exit removes only the
    # socket named by the container's id: the two must be the same, whatever the spec says.
    spec = {"annotations": {"io.containerd.runc.v2.group": "another"}}
    Handlers.mark(spec, RuntimeHandler("gvisor", GVISOR_RUNSC, GVISOR, ""), "sb-1")
    assert spec["annotations"] == {
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": "+sb-1+",
        "io.containerd.runc.v2.group": "sb-1",
    }


def test_the_sandboxer_lists_its_handlers() -> None:
    _need_runsc()
    done = subprocess.run(
        [sys.executable, "-m", "sandboxclient.sandboxer", "--list-runtime-handlers",
         "--runtime-handler", f"gvisor={GVISOR_RUNSC}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [(n, k) for n, k, *_ in lines] == [("gvisor", "gvisor"), ("runc", "runc")]
    assert lines[0][3].startswith("runsc version")


async def test_the_sandboxer_tells_its_handlers_on_its_socket(tmp_path: Path) -> None:
    told = HandlersIntrospection(Handlers({}, str(tmp_path)))
    every = await told.plugins(introspection_pb.PluginsRequest())
    assert [(p.type, p.id, p.exports["kind"]) for p in every.plugins] == [
        (RUNTIME_HANDLER_PLUGIN_TYPE, "runc", "runc")
    ]
    none = await told.plugins(introspection_pb.PluginsRequest(filters=["id==gvisor"]))
    assert none.plugins == []
    with pytest.raises(GRPCError, match="only type==") as caught:
        await told.plugins(introspection_pb.PluginsRequest(filters=["exports.kind==runc"]))
    assert caught.value.status is Status.INVALID_ARGUMENT


# -- through containerd ---------------------------------------------------------------------


@pytest.mark.real
async def test_sandboxctl_lists_the_sandboxers_handlers(tenant: Client) -> None:
    _need_runsc()
    found = await tenant.runtime_handlers()  # the tenant's sandboxer, asked on its socket
    assert [(h.name, h.kind) for h in found] == [("gvisor", "gvisor"), ("runc", "runc")]
    assert found[0].path == GVISOR_RUNSC
    assert found[0].version.startswith("runsc version")
    shown = (await cmd_handlers(tenant)).text
    assert re.search(rf"\ngvisor +gvisor +{GVISOR_RUNSC} +runsc version", shown), shown
    with pytest.raises(FailedPreconditionError, match="containerd's own"):
        await tenant.runtime_handlers("shim")
    with pytest.raises(NotFoundError, match='no sandboxer "nope"'):
        await tenant.runtime_handlers("nope")


@pytest.mark.real
async def test_an_unknown_handler_is_refused_by_name(tenant: Client) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await tenant.new_sandbox("h-kata", runtime=RUNTIME, runtime_handler="kata")
    text = str(caught.value)
    assert '"kata"' in text
    assert "io.sandboxclient.runtime-handler" in text
    assert '"runc"' in text
    assert await tenant.list_sandboxes() == []


@pytest.mark.real
@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (oci.generate_spec(oci.with_default_seccomp()), "linux.seccomp"),
        (
            {"linux": {"namespaces": [{"type": "network", "path": "/proc/1/ns/net"}]}},
            "linux.namespaces network path",
        ),
    ],
)
async def test_gvisor_refuses_what_it_would_drop(
    real: RealContainerd, tenant: Client, spec: dict[str, object], words: str
) -> None:
    _need_runsc()
    with pytest.raises(InvalidArgumentError, match=words):
        await tenant.new_sandbox("h-drop", runtime=RUNTIME, spec=spec, runtime_handler="gvisor")
    assert await tenant.list_sandboxes() == []


@pytest.mark.real
@pytest.mark.cgroup2
async def test_a_gvisor_sandbox_from_inside_and_from_the_host(
    real: RealContainerd, tenant: Client
) -> None:
    _need_runsc()
    secret = Path("/tmp") / f"gvisor-secret-{uuid.uuid4().hex}"
    secret.write_text("host only\n")
    sandbox_id = f"gv-{uuid.uuid4().hex[:8]}"
    try:
        async with tenant.sandbox(
            sandbox_id, runtime=RUNTIME, runtime_handler="gvisor", memory="128Mi", pids=256
        ) as sb:
            # gVisor's kernel, not the host's.
            kernel = await sb.run("sh", "-c", "uname -r; dmesg | head -n 1")
            release, first = kernel.stdout.decode().splitlines()[:2]
            assert release != os.uname().release
            assert "Starting gVisor" in first
            # Root inside, a read-only root, no host file.
            probe = await sb.run(
                "sh", "-c", f"id -u; touch /x; cat {secret}; grep Seccomp: /proc/1/status"
            )
            out, err = probe.stdout.decode(), probe.stderr.decode()
            assert out.splitlines()[0] == "0"
            assert "Read-only file system" in err
            assert "host only" not in out
            # The default profile, enforced by gVisor's kernel on the sandbox's process.
            assert out.splitlines()[-1].split() == ["Seccomp:", "2"]
            # spawn, with a stream each way.
            cat = await sb.spawn("cat", stdin=PIPE, stdout=PIPE)
            stdout, _ = await cat.communicate(b"through gVisor\n")
            assert stdout == b"through gVisor\n"
            # From the host: gVisor's kernel runs as nobody, its file server as the
            # sandbox's block of ids, both filtered, both in the sandbox's cgroup.
            runsc = _runsc_processes(sandbox_id)
            assert runsc
            uids = {int(_status_field(p, "Uid").split()[1]) for p in runsc}
            assert 0 not in uids
            assert {_status_field(p, "Seccomp") for p in runsc} == {"2"}
            assert {_status_field(p, "NoNewPrivs") for p in runsc} == {"1"}
            parent = f"/{tenant.namespace}/{sandbox_id}"  # v2: the parent the sandboxer made
            assert read_limit(parent, "memory.max") == 128 * 2**20
            assert read_limit(parent, "pids.max") == 256
            assert set(runsc) <= _cgroup_procs(tenant.namespace, sandbox_id)
            status = await sb.status(verbose=True)
            assert status.info["runtime_handler"] == "gvisor"
            # A hog over the memory limit (a string doubling till 1 GiB: a stream of bytes
            # takes a minute under emulation) does not get the memory: the host's OOM
            # killer ends gVisor's kernel, so the whole sandbox goes (under runc only the
            # process would).
            hog = await sb.run("sh", "-c", f"{DOUBLING}; echo survived", timeout=slowed(60))
            assert hog.returncode != 0
            assert b"survived" not in hog.stdout
            # The sandbox's own end follows the exec's (the sandboxer hears of its task's
            # exit a moment later): its Wait answers, then it is no longer ready.
            await asyncio.wait_for((await sb.wait()).get(), slowed(30))
            assert not (await sb.status()).ready
        # Shut down: no gVisor process, no shim and no cgroup left.
        assert _runsc_processes(sandbox_id) == []
        assert shims_of(real, tenant.namespace) == []
        assert not limit_file(f"/{tenant.namespace}/{sandbox_id}", "pids.max").parent.exists()
    finally:
        secret.unlink()


@pytest.mark.real
@pytest.mark.cgroup2
async def test_a_fork_bomb_under_gvisor_ends_the_sandbox_at_its_pids_limit(
    real: RealContainerd, tenant: Client
) -> None:
    # gVisor's processes are its own, but each one's address space is a host process of
    # gVisor's: past the host cgroup's pids limit gVisor's kernel cannot make one and the
    # whole sandbox ends, as at its memory limit. Without the limit all the sleeps would run.
    _need_runsc()
    limit = 128
    sandbox_id = f"gvp-{uuid.uuid4().hex[:8]}"
    parent = f"/{tenant.namespace}/{sandbox_id}"  # v2: the parent the sandboxer made
    bomb = f"for i in $(seq {limit + 100}); do sleep 600 >/dev/null 2>&1 & done; echo forked"
    async with tenant.sandbox(
        sandbox_id, runtime=RUNTIME, runtime_handler="gvisor", pids=limit
    ) as sb:
        assert read_limit(parent, "pids.max") == limit
        done = await sb.run("sh", "-c", bomb, timeout=slowed(120))
        assert done.returncode != 0
        assert b"forked" not in done.stdout
        await asyncio.wait_for((await sb.wait()).get(), slowed(30))
        assert not (await sb.status()).ready
    assert _runsc_processes(sandbox_id) == []
    assert shims_of(real, tenant.namespace) == []
    assert not limit_file(parent, "pids.max").parent.exists()


@pytest.mark.real
@pytest.mark.cgroup2
async def test_a_gvisor_sandbox_is_held_to_its_cpu_limit_and_its_metrics_tell_its_usage(
    real: RealContainerd, tenant: Client
) -> None:
    # gVisor's kernel runs a sandbox's processes on host threads of its own, all in the
    # sandbox's cgroup: the quota there is what holds a busy loop inside. Read from the
    # host, the cgroup's periods throttled grow while it spins (never without a quota) and
    # its CPU time grows at the limit's pace at most.
    _need_runsc()
    cpu, pids = 0.2, 300
    sandbox_id = f"gvc-{uuid.uuid4().hex[:8]}"
    parent = f"/{tenant.namespace}/{sandbox_id}"  # v2: the parent the sandboxer made
    async with tenant.sandbox(
        sandbox_id, runtime=RUNTIME, runtime_handler="gvisor", cpu=cpu, memory="256Mi", pids=pids
    ) as sb:
        spin = await sb.spawn("sh", "-c", "while :; do :; done")
        try:
            used, throttled = cpu_stats(parent)
            began = time.monotonic()

            def quota_throttles_the_loop() -> bool:
                return cpu_stats(parent)[1] >= throttled + 10

            await until(quota_throttles_the_loop, slowed(20))
            spent = cpu_stats(parent)[0] - used
            assert 0 < spent <= cpu * 1.5 * (time.monotonic() - began)
            # Metrics: the whole sandbox's figures (on v2 its parent cgroup's), as the
            # host reads them, within its limits.
            before = cpu_stats(parent)[0]
            usage = await sb.metrics()
            after = cpu_stats(parent)[0]
            assert before - 0.001 <= usage.cpu_usage_seconds <= after + 0.001
            assert usage.cpu_limit == cpu
            assert usage.memory_limit_bytes == 256 * 2**20
            assert 2**20 < usage.memory_usage_bytes <= 256 * 2**20
            assert usage.pids_limit == pids
            assert usage.pids is not None
            assert len(_runsc_processes(sandbox_id)) <= usage.pids <= pids
        finally:
            await spin.kill()
            await spin.wait()
    assert _runsc_processes(sandbox_id) == []
    assert not limit_file(parent, "pids.max").parent.exists()


@pytest.mark.real
async def test_a_gvisor_sandboxs_own_output_comes_apart_or_as_one(tenant: Client) -> None:
    # The runc shim, running runsc, writes each stream to the client's FIFO of its own.
    _need_runsc()
    script = "echo out; uname -r >&2; exit 6"
    done = await tenant.run(
        "sh", "-c", script, runtime=RUNTIME, runtime_handler="gvisor", timeout=60
    )
    assert (done.returncode, done.stdout) == (6, b"out\n")
    release = done.stderr.decode().strip()
    assert release  # gVisor's kernel, not the host's
    assert release != os.uname().release
    one = await tenant.run(
        "sh", "-c", script, stderr=STDOUT, runtime=RUNTIME, runtime_handler="gvisor", timeout=60
    )
    assert sorted(one.stdout.decode().splitlines()) == sorted(["out", release])
    assert one.stderr == b""
    assert await tenant.list_sandboxes() == []
