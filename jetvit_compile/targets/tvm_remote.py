"""Profiling and tuning on a remote device through TVM's RPC tracker and server.

This is the usual way to tune for an edge board: the board runs ``python -m tvm.exec.rpc_server
--tracker=HOST:PORT --key=KEY``, a tracker (``python -m tvm.exec.rpc_tracker``) hands sessions out
by key, and this machine compiles, uploads each module and asks the board to time it. A remote is
written ``host:port/key`` (the tracker's address and the board's key), e.g. ``10.0.0.5:9190/orin``.

``settings.tvm_remote`` makes MetaSchedule measure candidates on the remote (its RPCRunner instead
of the LocalRunner), with the database kept per remote key (see :mod:`.tvm_tuning`).
:func:`measure_remote` / :func:`remote_latency_ms` upload a compiled Relax executable and time it
with the VM's ``time_evaluator`` on the remote. :func:`serve_loopback` starts a tracker and a server
on 127.0.0.1, for tests and for trying the flow without a board.

The modules are built for this machine's target, so the remote must run the same architecture
(loopback, or a board of the same kind); cross-compiling for another one is not handled here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import re
import socket
import statistics
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import RewriteError, UsageError

_SPEC = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})/(?P<key>[A-Za-z0-9_.\-]+)$")
_CONNECT_TIMEOUT_S = 5.0  # reaching the tracker and reading its summary; a live tracker answers at once
_REQUEST_TIMEOUT_S = 60.0  # waiting for a free server of the key (one session per server at a time)
_SESSION_TIMEOUT_S = 600  # the server ends a session (upload, run, time) that lasts longer


@dataclasses.dataclass(frozen=True)
class RemoteDevice:
    """A device reached through an RPC tracker: the tracker's host and port, and the device's key."""

    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, spec: str) -> RemoteDevice:
        """``host:port/key`` -> RemoteDevice; a spec that does not parse raises ``UsageError``."""
        match = _SPEC.match(spec.strip()) if isinstance(spec, str) else None
        if not match or not 0 < int(match["port"]) < 65536:
            raise UsageError(f"TVM remote {spec!r} does not parse; write it as host:port/key (the RPC "
                             "tracker's address and the device key its server registered), e.g. 127.0.0.1:9190/orin")
        return cls(match["host"].strip("[]"), int(match["port"]), match["key"])

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.key}"

    def servers(self) -> int:
        """How many servers the tracker lists under this key; raises ``UsageError`` when the tracker
        cannot be reached or no server has the key (rather than waiting for one forever)."""
        summary = _within(_CONNECT_TIMEOUT_S, self._summary,
                          f"RPC tracker {self.host}:{self.port} did not answer in {_CONNECT_TIMEOUT_S:g} s")
        keys = sorted(item["key"].split(":", 1)[-1] for item in summary["server_info"])
        count = keys.count(self.key)
        if not count:
            raise UsageError(f"no RPC server is registered under key {self.key!r} at tracker {self.host}:"
                             f"{self.port} (keys there: {', '.join(sorted(set(keys))) or 'none'}); start one with "
                             f"python -m tvm.exec.rpc_server --tracker={self.host}:{self.port} --key={self.key}")
        return count

    def session(self, session_timeout_s: int = _SESSION_TIMEOUT_S):
        """An RPC session on a server of this key, requested from the tracker."""
        from tvm import rpc

        self.servers()
        tracker = rpc.connect_tracker(self.host, self.port)
        try:
            return _within(_REQUEST_TIMEOUT_S,
                           lambda: tracker.request(self.key, session_timeout=session_timeout_s, max_retry=2),
                           f"no server of key {self.key!r} at {self.host}:{self.port} became free in "
                           f"{_REQUEST_TIMEOUT_S:g} s")
        finally:
            tracker.close()

    def rpc_config(self, session_timeout_s: int):
        """MetaSchedule's ``RPCConfig`` for this remote."""
        from tvm.s_tir.meta_schedule.runner import RPCConfig

        return RPCConfig(tracker_host=self.host, tracker_port=self.port, tracker_key=self.key,
                         session_timeout_sec=session_timeout_s)

    def _summary(self) -> dict:
        from tvm import rpc

        try:  # a plain connect first: TVM's own client retries a refused connection for a minute
            socket.create_connection((self.host, self.port), timeout=_CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise UsageError(f"cannot reach the RPC tracker at {self.host}:{self.port} ({e}); start it with "
                             f"python -m tvm.exec.rpc_tracker --port={self.port}, or fix the remote spec") from e
        tracker = rpc.connect_tracker(self.host, self.port)
        try:
            return tracker.summary()
        finally:
            tracker.close()


def _within(seconds: float, fn: Callable[[], Any], timeout_message: str) -> Any:
    """``fn()``, or ``UsageError(timeout_message)`` after ``seconds``: TVM's RPC client has no timeouts."""
    result: dict[str, Any] = {}

    def call():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread below
            result["error"] = e

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise UsageError(f"{timeout_message}; check the remote spec and that the tracker and server run")
    if "error" in result:
        if isinstance(result["error"], UsageError):
            raise result["error"]
        raise RewriteError(f"TVM RPC failed: {type(result['error']).__name__}: {result['error']}") from result["error"]
    return result["value"]


@dataclasses.dataclass(frozen=True)
class RemoteMeasurement:
    """What one run on the remote gave: the outputs (copied back) and the time of each repeat."""

    outputs: list[np.ndarray]
    runs_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)


def measure_remote(executable, inputs, remote: RemoteDevice | str, repeat: int = 10,
                   number: int = 1) -> RemoteMeasurement:
    """Upload a compiled Relax ``executable``, run its ``main`` on ``inputs`` on the remote's CPU and
    time it there with the VM's ``time_evaluator`` (``repeat`` timings, each the mean of ``number``
    calls, after one warm-up call)."""
    remote = RemoteDevice.parse(remote) if isinstance(remote, str) else remote
    session = remote.session()
    try:
        return _measure_in(session, executable, inputs, max(repeat, 1), number)
    except Exception as e:  # noqa: BLE001 - TVM raises its own error types from the remote
        traceback.clear_frames(e.__traceback__)  # a kept traceback would keep the session open
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else "no detail"
        raise RewriteError(
            f"running the build on TVM remote {remote} failed ({type(e).__name__}: {detail}); check the "
            "inputs match the compiled model and the remote runs the same architecture") from None
    finally:
        # the server serves one session at a time: end this one now, not whenever the GC gets to it
        del session
        gc.collect()


def _measure_in(session, executable, inputs, repeat: int, number: int) -> RemoteMeasurement:
    from tvm import relax
    import tvm

    with tempfile.TemporaryDirectory(prefix="jetvit-rpc-") as folder:
        path = Path(folder) / "model.so"
        executable.export_library(str(path))
        session.upload(bytearray(path.read_bytes()), path.name)
    device = session.cpu()
    vm = relax.VirtualMachine(session.load_module(path.name), device)
    vm.set_input("main", *(tvm.runtime.tensor(_numpy(x), device) for x in inputs))
    timer = vm.time_evaluator("invoke_stateful", device, number=number, repeat=repeat)
    runs_ms = [s * 1e3 for s in timer("main").results]
    vm.invoke_stateful("main")
    out = vm.get_outputs("main")
    leaves = list(out) if isinstance(out, tuple | list) else [out]
    return RemoteMeasurement([np.asarray(t.numpy()) for t in leaves], runs_ms)


def remote_latency_ms(executable, inputs, remote: RemoteDevice | str, repeat: int = 10) -> float:
    """Median milliseconds of ``executable``'s ``main`` on the remote (see :func:`measure_remote`)."""
    return measure_remote(executable, inputs, remote, repeat).median_ms


def _numpy(x) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)


@contextlib.contextmanager
def serve_loopback(key: str = "loopback", servers: int = 1) -> Iterator[RemoteDevice]:
    """A tracker and ``servers`` RPC servers of ``key`` on 127.0.0.1 (free ports), stopped on exit."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    tracker = Tracker("127.0.0.1", port=_free_port(), port_end=65535, silent=True)
    started = []
    try:
        for _ in range(servers):
            started.append(rpc.Server("127.0.0.1", port=_free_port(), port_end=65535, key=key,
                                      tracker_addr=("127.0.0.1", tracker.port), silent=True))
        remote = RemoteDevice("127.0.0.1", tracker.port, key)
        _wait_for_servers(remote, servers)
        yield remote
    finally:
        for server in started:
            server.terminate()
        tracker.terminate()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_servers(remote: RemoteDevice, count: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if remote.servers() >= count:
                return
        except UsageError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise RewriteError(f"fewer than {count} loopback RPC servers registered at {remote} in {seconds:g} s")
        time.sleep(0.1)
