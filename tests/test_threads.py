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


POOL_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    import numba
    import torch
    from snnbench.maths import encoding, events, lif_cpu
    from snnbench.maths.neurons import LIFParams

    events.PARALLEL_MIN = 0  # every kernel launches in parallel
    torch.set_num_threads(int(sys.argv[1]))
    before = torch.get_num_threads()
    torch.manual_seed(0)
    x = (torch.rand(20, 64, 784) < 0.2).float()
    cur = torch.randn(20, 64, 256)
    images = (torch.rand(64, 28, 28) * 255).to(torch.uint8)

    def work():
        ev = events.from_dense(x)
        spk, mem = lif_cpu.leaky_forward(cur, torch.tensor(0.9), LIFParams())
        dense = encoding.rate(images, 24, generator=torch.Generator().manual_seed(1))
        return ev.indices, spk, mem, dense

    ref = work()
    print(numba.threading_layer(), events.threading_layer(), before, torch.get_num_threads())
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # a forked child (as DataLoader workers are: torch on one thread)
        torch.set_num_threads(1)
        same = all(torch.equal(a, b) for a, b in zip(work(), ref))
        os._exit(0 if same else 1)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """
)


@pytest.mark.skipif(not events.available(), reason="needs numba")
@pytest.mark.parametrize("threads", [1, 2])
def test_kernels_share_torch_openmp_keep_its_thread_count_and_run_in_a_forked_child(threads):
    """numba runs on torch's OpenMP runtime where torch has one (one pool of threads, not two
    fighting over the cores), its pool starting leaves torch's thread count as it was, and a
    fork of a process whose pool ran gets the same answers on the calling thread (GNU OpenMP
    would terminate it)."""
    proc = subprocess.run(
        [sys.executable, "-c", POOL_SCRIPT, str(threads)], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    layer, chosen, before, after, child = proc.stdout.split()
    assert layer == chosen  # the layer threading_layer() picked is the one numba runs
    if events._torch_openmp() is not None and events._omp_layer_loads():
        assert layer == "omp"  # torch on GNU OpenMP (Linux wheels), numba's layer there
    assert int(before) == threads and int(after) == threads
    assert child == "0", proc.stderr[-2000:]


@pytest.mark.skipif(not events.available(), reason="needs numba")
def test_without_numbas_openmp_layer_the_kernels_run_on_its_own_pool():
    """Where numba's OpenMP layer cannot load (no system libgomp), numba's own pool runs the
    kernels, with the same answers."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["numba.np.ufunc.omppool"] = None  # its import now fails
        import numba
        import torch
        from snnbench.maths import events
        events.PARALLEL_MIN = 0
        x = (torch.rand(20, 64, 784, generator=torch.Generator().manual_seed(0)) < 0.2).float()
        ev = events.from_dense(x)
        same = torch.equal(ev.to_dense(), x)
        print(events.threading_layer(), numba.threading_layer(), same)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["workqueue", "workqueue", "True"]
