"""The compiled kernels may be called from several Python threads at once (a data-loading
thread encoding while the main thread trains, threaded sweeps): no abort, right answers.

A failure aborts the interpreter (numba's non-thread-safe layer detects concurrent access
and calls abort()), so the callers run in a subprocess and the test reads its exit code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from snnbench.maths import events

SCRIPT = textwrap.dedent(
    """
    import threading
    import torch
    from snnbench.maths import encoding
    from snnbench.maths import events
    from snnbench.maths import lif_cpu
    from snnbench.maths.neurons import LIFParams

    torch.manual_seed(0)
    images = (torch.rand(64, 28, 28) * 255).to(torch.uint8)
    x = (torch.rand(20, 64, 784) < 0.2).float()
    cur = torch.randn(20, 64, 256)
    g = torch.randn(20 * 64, 256)
    ref_ev = events.from_dense(x)
    ref_w = events.event_weight_grad(ref_ev, g)
    ref_spk, ref_mem = lif_cpu.leaky_forward(cur, torch.tensor(0.9), LIFParams())
    errors = []
    start = threading.Barrier(4)

    def work(seed):
        start.wait()
        try:
            for _ in range(15):
                gen = torch.Generator().manual_seed(seed)
                encoding.rate_events(images, 24, generator=gen)  # > PARALLEL_MIN
                ev = events.from_dense(x)
                assert torch.equal(ev.indices, ref_ev.indices)
                assert torch.allclose(events.event_weight_grad(ev, g), ref_w, atol=1e-4)
                spk, mem = lif_cpu.leaky_forward(cur, torch.tensor(0.9), LIFParams())
                assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)
        except Exception as exc:  # reported by the main thread
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    print("ok")
    """
)


@pytest.mark.skipif(not events.available(), reason="needs numba")
def test_kernels_survive_concurrent_callers():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    )
