"""The leaky neuron's recurrence over T as compiled CPU loops (numba), one call per layer.

The fused engine's torch loop (:mod:`snnbench.engine`) issues ~4 small ops per step forward
and ~8 backward, each a parallel region on ``[B, N]``; on a CPU the per-op overhead and the
thread hand-offs dominate. Here each layer's whole forward (or backward) is one parallel
loop: the ``B*N`` neurons are split into contiguous chunks, each chunk runs all T steps.

The forward performs the same float32 operations in the same order as the torch loop (and
``snn.Leaky``): ``mem = beta * mem_prev`` (zero reset: ``mem - mem * spk_prev``), ``+ I``,
subtract reset ``- spk_prev * thr``, spike ``mem > thr`` — so spikes and membranes are
bit-identical. The backward is the same linear reverse recurrence, with the surrogate
evaluated per element (equal to the torch loop within float32 rounding).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from snnbench import events
from snnbench.neurons import LIFParams

RESET_CODES = {"subtract": 0, "zero": 1, "none": 2}
SURROGATE_CODES = {"atan": 0, "fast_sigmoid": 1, "sigmoid": 2}

if events.numba is not None:
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def _forward_kernel(cur, b, thr, reset, n_chunks):  # pragma: no cover - compiled
        """cur float32 ``[T, M]`` -> (mem, spk) ``[T, M]``; b, thr float32; reset code."""
        T, M = cur.shape
        mem = np.empty_like(cur)
        spk = np.empty_like(cur)
        step = (M + n_chunks - 1) // n_chunks
        one = np.float32(1.0)
        zero = np.float32(0.0)
        for c in prange(n_chunks):
            lo, hi = c * step, min(M, (c + 1) * step)
            for j in range(lo, hi):
                m = cur[0, j]
                mem[0, j] = m
                spk[0, j] = one if m > thr else zero
            for t in range(1, T):
                for j in range(lo, hi):
                    s = spk[t - 1, j]
                    m = mem[t - 1, j] * b
                    if reset == 1:
                        m = m - m * s
                    m = m + cur[t, j]
                    if reset == 0:
                        m = m - s * thr
                    mem[t, j] = m
                    spk[t, j] = one if m > thr else zero
        return mem, spk

    @njit(parallel=True, cache=True)
    def _backward_kernel(
        mem, spk, grad_spk, grad_mem, b, thr, slope, surrogate, reset, want_b, n_chunks
    ):  # pragma: no cover - compiled
        """Reverse recurrence: -> (dL/dcurrent ``[T, M]``, dL/dbeta partial sums ``[M]``).

        grad_spk / grad_mem: ``[T, M]`` or ``[0, 0]`` when absent (zero)."""
        T, M = mem.shape
        g = np.empty_like(mem)
        acc = np.zeros(M, dtype=mem.dtype)
        has_gs = grad_spk.shape[0] > 0
        has_gm = grad_mem.shape[0] > 0
        step = (M + n_chunks - 1) // n_chunks
        half_pi_k = np.float32(math.pi / 2 * slope)
        k = np.float32(slope)
        half_k = np.float32(slope / 2)
        one = np.float32(1.0)
        for c in prange(n_chunks):
            lo, hi = c * step, min(M, (c + 1) * step)
            for t in range(T - 1, -1, -1):
                for j in range(lo, hi):
                    d = grad_mem[t, j] if has_gm else np.float32(0.0)
                    if has_gs:
                        u = mem[t, j] - thr
                        if surrogate == 0:  # atan: (k/2) / (1 + (pi/2 * k * u)^2)
                            v = half_pi_k * u
                            sg = half_k / (one + v * v)
                        elif surrogate == 1:  # fast sigmoid: 1 / (k * |u| + 1)^2
                            v = k * abs(u) + one
                            sg = one / (v * v)
                        else:  # sigmoid: k * s * (1 - s), s = sigmoid(k * u)
                            s = one / (one + np.exp(-(k * u)))
                            sg = k * (s - s * s)
                        d = d + grad_spk[t, j] * sg
                    if t < T - 1:
                        nxt = g[t + 1, j]
                        if reset == 1:  # d mem[t+1] / d mem[t] = beta * (1 - spk[t])
                            nxt = nxt - nxt * spk[t, j]
                        d = d + nxt * b
                    g[t, j] = d
                    if want_b and t > 0:  # d mem[t] / d beta = pre-decay membrane
                        pre = mem[t - 1, j]
                        if reset == 1:
                            pre = pre - pre * spk[t - 1, j]
                        acc[j] += d * pre
        return g, acc


def usable(current: torch.Tensor) -> bool:
    """Whether the compiled loops can run this input: float32 on the CPU, numba present."""
    return (
        events.numba is not None and current.device.type == "cpu" and current.dtype == torch.float32
    )


def _chunks() -> int:
    events.set_threads()
    return 4 * events.numba.get_num_threads()


def leaky_forward(
    current: torch.Tensor, b: torch.Tensor, p: LIFParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """current ``[T, B, N]`` (contiguous), beta 0-dim (clamped) -> (spk, mem) ``[T, B, N]``."""
    T = current.shape[0]
    cur = current.detach().reshape(T, -1).numpy()
    mem, spk = _forward_kernel(
        cur,
        np.float32(b.item()),
        np.float32(p.threshold),
        RESET_CODES[p.reset],
        _chunks(),
    )
    shape = current.shape
    return torch.from_numpy(spk).view(shape), torch.from_numpy(mem).view(shape)


def leaky_backward(
    mem: torch.Tensor,
    spk: torch.Tensor,
    grad_spk: torch.Tensor | None,
    grad_mem: torch.Tensor | None,
    b: torch.Tensor,
    p: LIFParams,
    want_b: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dL/dcurrent ``[T, B, N]`` and dL/dbeta (0-dim, or None unless ``want_b``)."""
    T = mem.shape[0]
    empty = np.zeros((0, 0), dtype=np.float32)

    def flat(x: torch.Tensor | None) -> np.ndarray:
        return empty if x is None else x.detach().contiguous().reshape(T, -1).numpy()

    g, acc = _backward_kernel(
        flat(mem),
        flat(spk),
        flat(grad_spk),
        flat(grad_mem),
        np.float32(b.item()),
        np.float32(p.threshold),
        float(p.surrogate_slope),
        SURROGATE_CODES[p.surrogate],
        RESET_CODES[p.reset],
        want_b,
        _chunks(),
    )
    grad_b = torch.from_numpy(acc).sum().to(b.dtype) if want_b else None
    return torch.from_numpy(g).view(mem.shape), grad_b
