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
        """cur float32 ``[T, M]`` -> (mem, spk) ``[T, M]``; b, thr float32; reset code.

        The reset branch is outside the inner loops, which stay branch-free (vectorised)."""
        T, M = cur.shape
        mem = np.empty_like(cur)
        spk = np.empty_like(cur)
        step = (M + n_chunks - 1) // n_chunks
        for c in prange(n_chunks):
            lo, hi = c * step, min(M, (c + 1) * step)
            for j in range(lo, hi):
                m = cur[0, j]
                mem[0, j] = m
                spk[0, j] = np.float32(m > thr)
            for t in range(1, T):
                mp, sp, ct, mt, st = mem[t - 1], spk[t - 1], cur[t], mem[t], spk[t]
                if reset == 0:  # subtract: (beta * m_prev + I) - s_prev * thr
                    for j in range(lo, hi):
                        m = mp[j] * b + ct[j] - sp[j] * thr
                        mt[j] = m
                        st[j] = np.float32(m > thr)
                elif reset == 1:  # zero: beta * m_prev, minus itself where s_prev, + I
                    for j in range(lo, hi):
                        m = mp[j] * b
                        m = (m - m * sp[j]) + ct[j]
                        mt[j] = m
                        st[j] = np.float32(m > thr)
                else:
                    for j in range(lo, hi):
                        m = mp[j] * b + ct[j]
                        mt[j] = m
                        st[j] = np.float32(m > thr)
        return mem, spk

    @njit(parallel=True, cache=True)
    def _backward_kernel(
        mem, spk, grad_spk, grad_mem, b, thr, slope, surrogate, reset, want_b, n_chunks
    ):  # pragma: no cover - compiled
        """Reverse recurrence: -> (dL/dcurrent ``[T, M]``, dL/dbeta partial sums ``[M]``).

        grad_spk / grad_mem: ``[T, M]`` or ``[0, 0]`` when absent (zero). Branches on the
        codes sit outside the inner loops."""
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
                gt, mt = g[t], mem[t]
                if has_gm:
                    gmt = grad_mem[t]
                    for j in range(lo, hi):
                        gt[j] = gmt[j]
                else:
                    for j in range(lo, hi):
                        gt[j] = 0
                if has_gs:
                    gst = grad_spk[t]
                    if surrogate == 0:  # atan: (k/2) / (1 + (pi/2 * k * u)^2)
                        for j in range(lo, hi):
                            v = half_pi_k * (mt[j] - thr)
                            gt[j] += gst[j] * (half_k / (one + v * v))
                    elif surrogate == 1:  # fast sigmoid: 1 / (k * |u| + 1)^2
                        for j in range(lo, hi):
                            v = k * abs(mt[j] - thr) + one
                            gt[j] += gst[j] * (one / (v * v))
                    else:  # sigmoid: k * s * (1 - s), s = sigmoid(k * u)
                        for j in range(lo, hi):
                            s = one / (one + np.exp(-(k * (mt[j] - thr))))
                            gt[j] += gst[j] * (k * (s - s * s))
                if t < T - 1:
                    gn = g[t + 1]
                    if reset == 1:  # d mem[t+1] / d mem[t] = beta * (1 - spk[t])
                        st = spk[t]
                        for j in range(lo, hi):
                            gt[j] += (gn[j] - gn[j] * st[j]) * b
                    else:
                        for j in range(lo, hi):
                            gt[j] += gn[j] * b
                if want_b and t > 0:  # d mem[t] / d beta = pre-decay membrane
                    mp = mem[t - 1]
                    if reset == 1:
                        sp = spk[t - 1]
                        for j in range(lo, hi):
                            acc[j] += gt[j] * (mp[j] - mp[j] * sp[j])
                    else:
                        for j in range(lo, hi):
                            acc[j] += gt[j] * mp[j]
        return g, acc


def usable(current: torch.Tensor) -> bool:
    """Whether the compiled loops can run this input: float32 on the CPU, numba present."""
    return (
        events.numba is not None and current.device.type == "cpu" and current.dtype == torch.float32
    )


def _chunks() -> int:
    return 4 * max(1, min(torch.get_num_threads(), events.numba.config.NUMBA_NUM_THREADS))


def leaky_forward(
    current: torch.Tensor, b: torch.Tensor, p: LIFParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """current ``[T, B, N]`` (contiguous), beta 0-dim (clamped) -> (spk, mem) ``[T, B, N]``."""
    T = current.shape[0]
    cur = current.detach().reshape(T, -1).numpy()
    mem, spk = events.launch(
        _forward_kernel,
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

    g, acc = events.launch(
        _backward_kernel,
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
