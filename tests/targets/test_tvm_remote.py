"""The tvm target on a remote device through TVM's RPC tracker and server, on loopback: a tracker and a
server on 127.0.0.1 stand in for an edge board. A build uploaded over RPC gives the local answer and a
positive latency; tuning through the tracker fills a database keyed by the remote and is reused; a
bad remote spec fails at once with a message naming the fix.

The tuning test costs about a minute on a 2-core CPU, like test_tvm_tuning.py (1 task, 4 trials).
"""
import math
import socket

import numpy as np
import pytest
import torch

from jetvit_compile.errors import RewriteError, UsageError
from jetvit_compile.targets import TARGETS, CompileSettings

pytestmark = pytest.mark.skipif(not TARGETS["tvm"].available()[0], reason="apache-tvm does not import here")

KEY = "jetvit-loopback"


class _TinyViT(torch.nn.Module):
    """Patch conv, one attention block (2 heads, width 32), mean pool."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patch = torch.nn.Conv2d(3, 32, 8, stride=8)
        self.qkv = torch.nn.Linear(32, 96)
        self.proj = torch.nn.Linear(32, 32)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        b, n, _ = t.shape
        q, k, v = self.qkv(t).reshape(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(a.transpose(1, 2).reshape(b, n, 32)).mean(dim=1)


@pytest.fixture(scope="module")
def remote():
    from jetvit_compile.targets.tvm_remote import serve_loopback

    with serve_loopback(KEY) as device:
        yield device


@pytest.fixture(scope="module")
def program():
    return torch.export.export(_TinyViT().eval(), (torch.randn(1, 3, 32, 32),))


def test_a_build_timed_over_rpc_gives_the_local_answer_and_a_latency(remote, program):
    from jetvit_compile.targets.tvm_remote import measure_remote, remote_latency_ms

    x = torch.randn(1, 3, 32, 32)
    compiled = TARGETS["tvm"].compile(program, (x,), CompileSettings())
    measured = measure_remote(compiled.executable, (x,), remote, repeat=5)
    local = compiled(x).numpy()

    assert len(measured.outputs) == 1 and measured.outputs[0].shape == local.shape
    worst = np.abs(measured.outputs[0] - local).max()
    assert worst <= 1e-5, f"remote output differs from the local run by {worst:.2e}"
    assert len(measured.runs_ms) == 5 and all(math.isfinite(t) and t > 0 for t in measured.runs_ms)
    with pytest.raises(RewriteError, match="running the build on TVM remote"):
        measure_remote(compiled.executable, (torch.randn(1, 3, 16, 16),), remote, repeat=1)
    again = remote_latency_ms(compiled.executable, (x,), str(remote), repeat=3)
    assert math.isfinite(again) and again > 0, "a failed session does not leave the server busy"
    print(f"remote median {measured.median_ms:.3f} ms, local median {compiled.benchmark(x).median_ms:.3f} ms")


def test_tuning_through_the_tracker_fills_the_remote_database_and_is_reused(remote, program, tmp_path,
                                                                            monkeypatch):
    from jetvit_compile.targets.tvm_tuning import default_database_dir, open_database

    monkeypatch.setenv("JETVIT_COMPILE_CACHE", str(tmp_path))
    x = torch.randn(1, 3, 32, 32)
    settings = CompileSettings(tvm_trials=4, tvm_tune_tasks=1, tvm_remote=str(remote))
    db = default_database_dir(remote)
    assert db.name == f"remote-{KEY}" and db.parent == default_database_dir().parent

    first = TARGETS["tvm"].compile(program, (x,), settings)
    assert first.tuning["database"] == str(db) and first.tuning["remote"] == str(remote)
    assert 0 < first.tuning["trials"] <= 4 and not first.tuning["reused"]
    records = (db / "database_tuning_record.json").read_text().splitlines()
    assert len(records) == first.tuning["trials"], "every trial timed on the remote is a record"
    assert not default_database_dir().exists(), "this machine's own database is left alone"
    timed = [float(t) for r in open_database(db).get_all_tuning_records() for t in (r.run_secs or [])]
    assert len(timed) >= len(records) and all(0 < t < 1 for t in timed), f"a failed or missing run: {timed}"
    print(f"tuned {first.tuning['trials']} trials over RPC in {first.tuning['seconds']:.1f} s")

    second = TARGETS["tvm"].compile(program, (x,), settings)
    assert second.tuning["trials"] == 0 and second.tuning["reused"]
    assert (db / "database_tuning_record.json").read_text().splitlines() == records
    expected = TARGETS["tvm"].compile(program, (x,), CompileSettings())(x)
    worst = (second(x) - expected).abs().max().item()
    assert worst <= 1e-4, f"the tuned build differs from the untuned one by {worst:.2e}"


@pytest.mark.parametrize("spec", ["nohost", "127.0.0.1:9190", "127.0.0.1/key", "host:99999/key",
                                  "host:port/key", "host:9190/bad key", ""])
def test_a_spec_that_does_not_parse_names_the_format(spec):
    from jetvit_compile.targets.tvm_remote import RemoteDevice

    with pytest.raises(UsageError, match="host:port/key"):
        RemoteDevice.parse(spec)


def test_a_spec_parses_into_host_port_and_key():
    from jetvit_compile.targets.tvm_remote import RemoteDevice

    assert RemoteDevice.parse(" 10.0.0.5:9190/orin-nx ") == RemoteDevice("10.0.0.5", 9190, "orin-nx")
    assert str(RemoteDevice("board.local", 9190, "rasp4")) == "board.local:9190/rasp4"


def test_an_unreachable_tracker_fails_at_once_with_the_fix():
    from jetvit_compile.targets.tvm_remote import remote_latency_ms

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UsageError, match=f"cannot reach the RPC tracker at 127.0.0.1:{port}.*rpc_tracker"):
        remote_latency_ms(None, (), f"127.0.0.1:{port}/{KEY}")


def test_an_unknown_key_fails_before_tuning_and_lists_the_keys_there(remote, program, tmp_path):
    unknown = f"{remote.host}:{remote.port}/no-such-board"
    settings = CompileSettings(tvm_trials=4, tvm_tune_tasks=1, tvm_remote=unknown, tvm_database=str(tmp_path))
    with pytest.raises(UsageError) as e:
        TARGETS["tvm"].compile(program, (torch.randn(1, 3, 32, 32),), settings)
    message = str(e.value)
    assert "'no-such-board'" in message and KEY in message and "--key=no-such-board" in message
    assert not (tmp_path / "database_tuning_record.json").read_text().strip(), "nothing was tuned"
