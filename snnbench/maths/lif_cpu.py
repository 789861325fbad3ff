"""The neuron recurrences over T as compiled CPU loops (numba): one call per layer and pass.

The fused engine's torch loop (:mod:`snnbench.maths.engine`) issues ~4 small ops per step forward
and ~8 backward, each a parallel region on ``[B, N]``; on a CPU the per-op overhead and the
thread hand-offs dominate. Here each layer's whole forward (or backward) is one compiled
call over the flattened ``[T, M]`` (``M = B*N``) arrays:

* the ``M`` neurons are cut into blocks of :data:`BLOCK` columns; a block runs all T steps
  with its rows (``[BLOCK]`` floats per array) in cache, so each element of the big
  arrays is read or written once from memory: the forward reads the current and writes
  membrane and spikes, the backward reads membrane and dL/dspikes and writes dL/dcurrent;
* the inner loops over a block's columns are branch-free float32 arithmetic that LLVM
  vectorises (SIMD across ``B*N``);
* work of at least ``events.PARALLEL_MIN`` elements is split over threads in contiguous
  chunks of blocks (one parallel launch per call); smaller work runs on the calling thread,
  where a launch would cost more than it saves (see ``events.PARALLEL_MIN``).

The forward performs the same float32 operations in the same order as the torch loop (and
``snn.Leaky`` / ``snn.Synaptic``): ``mem = beta * mem_prev`` (zero reset: ``mem - mem *
spk_prev``), ``+ I``, subtract reset ``- spk_prev * thr``, spike ``mem > thr`` — so spikes
and membranes are bit-identical. The backward is the same linear reverse recurrence, with
the surrogate evaluated per element (equal to the torch loop within float32 rounding); it
reads the spikes it needs as ``mem > thr`` (exactly the forward's spikes) instead of
loading them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from snnbench.maths import events
from snnbench.maths.neurons import LIFParams

RESET_CODES = {"subtract": 0, "zero": 1, "none": 2}
SURROGATE_CODES = {"atan": 0, "fast_sigmoid": 1, "sigmoid": 2}
#: Columns (neurons) per block: a step's rows of a block (8 KB per array) stay in L1/L2.
BLOCK = 2048

if events.numba is not None:
    from numba import njit, prange

    # ------------------------------------------------------------------ leaky, forward

    @njit(cache=True, boundscheck=False, error_model="numpy")
    def _leaky_fwd_cols(cur, mem, spk, b, thr, reset, lo, hi):  # pragma: no cover - compiled
        """Columns ``lo:hi`` of cur float32 ``[T, M]`` -> mem, spk (written in place)."""
        T = cur.shape[0]
        one, zero = np.float32(1.0), np.float32(0.0)
        for j0 in range(lo, hi, BLOCK):
            j1 = min(hi, j0 + BLOCK)
            c0, m0, s0 = cur[0, j0:j1], mem[0, j0:j1], spk[0, j0:j1]
            for j in range(j1 - j0):  # beta * 0 + I == I
                m = c0[j]
                m0[j] = m
                s0[j] = one if m > thr else zero
            for t in range(1, T):
                mp, sp = mem[t - 1, j0:j1], spk[t - 1, j0:j1]
                ct, mt, st = cur[t, j0:j1], mem[t, j0:j1], spk[t, j0:j1]
                if reset == 0:  # subtract: (beta * m_prev + I) - s_prev * thr
                    for j in range(j1 - j0):
                        m = mp[j] * b + ct[j] - sp[j] * thr
                        mt[j] = m
                        st[j] = one if m > thr else zero
                elif reset == 1:  # zero: beta * m_prev, minus itself where s_prev, + I
                    for j in range(j1 - j0):
                        m = mp[j] * b
                        m = (m - m * sp[j]) + ct[j]
                        mt[j] = m
                        st[j] = one if m > thr else zero
                else:
                    for j in range(j1 - j0):
                        m = mp[j] * b + ct[j]
                        mt[j] = m
                        st[j] = one if m > thr else zero

    @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
    def _leaky_fwd_par(cur, mem, spk, b, thr, reset, n_chunks):  # pragma: no cover
        step = _chunk_step(cur.shape[1], n_chunks)
        for c in prange(n_chunks):
            lo = c * step
            _leaky_fwd_cols(cur, mem, spk, b, thr, reset, lo, min(cur.shape[1], lo + step))

    # ------------------------------------------------------------------ shared backward parts

    @njit(cache=True, boundscheck=False, error_model="numpy", inline="always")
    def _direct(gt, mt, gs, gm, has_gs, has_gm, thr, slope, surrogate):  # pragma: no cover
        """``gt = grad_mem + grad_spk * sg(mem - thr)`` for one step's block (absent = 0)."""
        n = gt.shape[0]
        one = np.float32(1.0)
        k = np.float32(slope)
        half_k = np.float32(slope / 2)
        half_pi_k = np.float32(math.pi / 2 * slope)
        if has_gm:
            for j in range(n):
                gt[j] = gm[j]
        elif not has_gs:
            for j in range(n):
                gt[j] = 0
        if not has_gs:
            return
        if surrogate == 0:  # atan: (k/2) / (1 + (pi/2 * k * u)^2)
            if has_gm:
                for j in range(n):
                    v = half_pi_k * (mt[j] - thr)
                    gt[j] += gs[j] * (half_k / (one + v * v))
            else:
                for j in range(n):
                    v = half_pi_k * (mt[j] - thr)
                    gt[j] = gs[j] * (half_k / (one + v * v))
        elif surrogate == 1:  # fast sigmoid: 1 / (k * |u| + 1)^2
            if has_gm:
                for j in range(n):
                    v = k * abs(mt[j] - thr) + one
                    gt[j] += gs[j] * (one / (v * v))
            else:
                for j in range(n):
                    v = k * abs(mt[j] - thr) + one
                    gt[j] = gs[j] * (one / (v * v))
        else:  # sigmoid: k * s * (1 - s), s = sigmoid(k * u)
            for j in range(n):
                s = one / (one + np.exp(-(k * (mt[j] - thr))))
                d = gs[j] * (k * (s - s * s))
                if has_gm:
                    gt[j] += d
                else:
                    gt[j] = d

    @njit(cache=True, boundscheck=False, error_model="numpy")
    def _chunk_step(M, n_chunks):  # pragma: no cover - compiled
        """Columns per thread chunk: a multiple of BLOCK, so blocks never straddle chunks."""
        per = (M + n_chunks - 1) // n_chunks
        return ((per + BLOCK - 1) // BLOCK) * BLOCK

    # ------------------------------------------------------------------ leaky, backward

    @njit(cache=True, boundscheck=False, error_model="numpy")
    def _leaky_bwd_cols(
        mem, gs, gm, g, acc, b, thr, slope, surrogate, reset, want_b, lo, hi
    ):  # pragma: no cover - compiled
        """Columns ``lo:hi``: g (dL/dcurrent) and acc (dL/dbeta per neuron) in place."""
        T = mem.shape[0]
        has_gs, has_gm = gs.shape[1] > 0, gm.shape[1] > 0
        zero = np.float32(0.0)
        for j0 in range(lo, hi, BLOCK):
            j1 = min(hi, j0 + BLOCK)
            n = j1 - j0
            for t in range(T - 1, -1, -1):
                gt, mt = g[t, j0:j1], mem[t, j0:j1]
                _direct(
                    gt,
                    mt,
                    gs[t, j0:j1] if has_gs else gs[0, 0:0],
                    gm[t, j0:j1] if has_gm else gm[0, 0:0],
                    has_gs,
                    has_gm,
                    thr,
                    slope,
                    surrogate,
                )
                if t < T - 1:
                    gn = g[t + 1, j0:j1]
                    if reset == 1:  # d mem[t+1] / d mem[t] = beta * (1 - spk[t])
                        for j in range(n):
                            x = gn[j]
                            gt[j] += (x - (x if mt[j] > thr else zero)) * b
                    else:
                        for j in range(n):
                            gt[j] += gn[j] * b
                if want_b and t > 0:  # d mem[t] / d beta = pre-decay membrane
                    mp, a = mem[t - 1, j0:j1], acc[j0:j1]
                    if reset == 1:
                        for j in range(n):
                            x = mp[j]
                            a[j] += gt[j] * (x - (x if x > thr else zero))
                    else:
                        for j in range(n):
                            a[j] += gt[j] * mp[j]

    @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
    def _leaky_bwd_par(
        mem, gs, gm, g, acc, b, thr, slope, surrogate, reset, want_b, n_chunks
    ):  # pragma: no cover - compiled
        M = mem.shape[1]
        step = _chunk_step(M, n_chunks)
        for c in prange(n_chunks):
            lo = c * step
            _leaky_bwd_cols(
                mem, gs, gm, g, acc, b, thr, slope, surrogate, reset, want_b, lo, min(M, lo + step)
            )

    # ------------------------------------------------------------------ synaptic

    @njit(cache=True, boundscheck=False, error_model="numpy")
    def _syn_fwd_cols(cur, mem, spk, a, b, thr, reset, lo, hi):  # pragma: no cover
        """``snn.Synaptic`` columns ``lo:hi``: syn = a * syn + I; mem as in the torch loop."""
        T = cur.shape[0]
        one, zero = np.float32(1.0), np.float32(0.0)
        syn = np.empty(BLOCK, dtype=np.float32)
        for j0 in range(lo, hi, BLOCK):
            j1 = min(hi, j0 + BLOCK)
            n = j1 - j0
            c0, m0, s0 = cur[0, j0:j1], mem[0, j0:j1], spk[0, j0:j1]
            for j in range(n):
                m = c0[j]
                syn[j] = m
                m0[j] = m
                s0[j] = one if m > thr else zero
            for t in range(1, T):
                mp, sp = mem[t - 1, j0:j1], spk[t - 1, j0:j1]
                ct, mt, st = cur[t, j0:j1], mem[t, j0:j1], spk[t, j0:j1]
                for j in range(n):
                    s = syn[j] * a + ct[j]
                    syn[j] = s
                    m = mp[j] * b + s
                    if reset == 0:
                        m = m - sp[j] * thr
                    elif reset == 1:
                        m = m - m * sp[j]
                    mt[j] = m
                    st[j] = one if m > thr else zero

    @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
    def _syn_fwd_par(cur, mem, spk, a, b, thr, reset, n_chunks):  # pragma: no cover
        step = _chunk_step(cur.shape[1], n_chunks)
        for c in prange(n_chunks):
            lo = c * step
            _syn_fwd_cols(cur, mem, spk, a, b, thr, reset, lo, min(cur.shape[1], lo + step))

    @njit(cache=True, boundscheck=False, error_model="numpy")
    def _syn_bwd_cols(
        mem, gs, gm, g, acc, a, b, thr, slope, surrogate, reset, want_b, lo, hi
    ):  # pragma: no cover - compiled
        """Columns ``lo:hi`` of the synaptic reverse recurrence (see ``engine._SynapticSeq``):
        gc = direct + beta * gc_next, zeroed where spk[t-1] (zero reset);
        dL/dsyn[t] = gc + alpha * dL/dsyn[t+1] -> g."""
        T = mem.shape[0]
        has_gs, has_gm = gs.shape[1] > 0, gm.shape[1] > 0
        zero = np.float32(0.0)
        gc = np.empty(BLOCK, dtype=np.float32)
        gcn = np.empty(BLOCK, dtype=np.float32)
        for j0 in range(lo, hi, BLOCK):
            j1 = min(hi, j0 + BLOCK)
            n = j1 - j0
            for t in range(T - 1, -1, -1):
                mt, gt = mem[t, j0:j1], g[t, j0:j1]
                _direct(
                    gc[:n],
                    mt,
                    gs[t, j0:j1] if has_gs else gs[0, 0:0],
                    gm[t, j0:j1] if has_gm else gm[0, 0:0],
                    has_gs,
                    has_gm,
                    thr,
                    slope,
                    surrogate,
                )
                if t < T - 1:
                    for j in range(n):
                        gc[j] += gcn[j] * b
                if reset == 1 and t > 0:
                    mp = mem[t - 1, j0:j1]
                    for j in range(n):
                        x = gc[j]
                        gc[j] = x - (x if mp[j] > thr else zero)
                if want_b and t > 0:
                    mp, ac = mem[t - 1, j0:j1], acc[j0:j1]
                    for j in range(n):
                        ac[j] += gc[j] * mp[j]
                if t < T - 1:
                    gn = g[t + 1, j0:j1]
                    for j in range(n):
                        gt[j] = gc[j] + gn[j] * a
                else:
                    for j in range(n):
                        gt[j] = gc[j]
                for j in range(n):
                    gcn[j] = gc[j]

    @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
    def _syn_bwd_par(
        mem, gs, gm, g, acc, a, b, thr, slope, surrogate, reset, want_b, n_chunks
    ):  # pragma: no cover - compiled
        M = mem.shape[1]
        step = _chunk_step(M, n_chunks)
        for c in prange(n_chunks):
            lo = c * step
            _syn_bwd_cols(
                mem,
                gs,
                gm,
                g,
                acc,
                a,
                b,
                thr,
                slope,
                surrogate,
                reset,
                want_b,
                lo,
                min(M, lo + step),
            )


def usable(current: torch.Tensor) -> bool:
    """Whether the compiled loops can run this input: float32 on the CPU, numba present."""
    return (
        events.numba is not None and current.device.type == "cpu" and current.dtype == torch.float32
    )


def _flat(x: torch.Tensor | None, T: int) -> np.ndarray:
    """``[T, ...]`` -> float32 ``[T, M]`` numpy view (a copy only if not contiguous);
    None -> an empty ``[1, 0]`` array (absent gradient)."""
    if x is None:
        return np.zeros((1, 0), dtype=np.float32)
    return x.detach().contiguous().reshape(T, -1).numpy()


def _forward(
    current: torch.Tensor, b: torch.Tensor, p: LIFParams, synaptic: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    T = current.shape[0]
    cur = _flat(current, T)
    mem_t, spk_t = torch.empty_like(current), torch.empty_like(current)
    mem, spk = mem_t.view(T, -1).numpy(), spk_t.view(T, -1).numpy()
    bb, thr, reset = np.float32(b.item()), np.float32(p.threshold), RESET_CODES[p.reset]
    extra = (np.float32(min(max(p.alpha, 0.0), 1.0)),) if synaptic else ()
    n = events.threads_for(cur.size)
    if n == 1:
        cols = _syn_fwd_cols if synaptic else _leaky_fwd_cols
        cols(cur, mem, spk, *extra, bb, thr, reset, 0, cur.shape[1])
    else:
        par = _syn_fwd_par if synaptic else _leaky_fwd_par
        events.launch(par, cur, mem, spk, *extra, bb, thr, reset, n)
    return spk_t, mem_t


def _backward(
    mem: torch.Tensor,
    grad_spk: torch.Tensor | None,
    grad_mem: torch.Tensor | None,
    b: torch.Tensor,
    p: LIFParams,
    want_b: bool,
    synaptic: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    T = mem.shape[0]
    m = _flat(mem, T)
    g_t = torch.empty_like(mem)
    g = g_t.view(T, -1).numpy()
    acc = np.zeros(m.shape[1] if want_b else 1, dtype=np.float32)
    extra = (np.float32(min(max(p.alpha, 0.0), 1.0)),) if synaptic else ()
    args = (
        m,
        _flat(grad_spk, T),
        _flat(grad_mem, T),
        g,
        acc,
        *extra,
        np.float32(b.item()),
        np.float32(p.threshold),
        float(p.surrogate_slope),
        SURROGATE_CODES[p.surrogate],
        RESET_CODES[p.reset],
        want_b,
    )
    n = events.threads_for(m.size)
    if n == 1:
        (_syn_bwd_cols if synaptic else _leaky_bwd_cols)(*args, 0, m.shape[1])
    else:
        events.launch(_syn_bwd_par if synaptic else _leaky_bwd_par, *args, n)
    grad_b = torch.from_numpy(acc).sum().to(b.dtype) if want_b else None
    return g_t, grad_b


def leaky_forward(
    current: torch.Tensor, b: torch.Tensor, p: LIFParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """current ``[T, B, N]``, beta 0-dim (clamped) -> (spk, mem) ``[T, B, N]``."""
    return _forward(current, b, p, synaptic=False)


def leaky_backward(
    mem: torch.Tensor,
    grad_spk: torch.Tensor | None,
    grad_mem: torch.Tensor | None,
    b: torch.Tensor,
    p: LIFParams,
    want_b: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dL/dcurrent ``[T, B, N]`` and dL/dbeta (0-dim, or None unless ``want_b``)."""
    return _backward(mem, grad_spk, grad_mem, b, p, want_b, synaptic=False)


def synaptic_forward(
    current: torch.Tensor, b: torch.Tensor, p: LIFParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """``snn.Synaptic`` (alpha = ``p.alpha`` clamped): current ``[T, B, N]`` -> (spk, mem)."""
    return _forward(current, b, p, synaptic=True)


def synaptic_backward(
    mem: torch.Tensor,
    grad_spk: torch.Tensor | None,
    grad_mem: torch.Tensor | None,
    b: torch.Tensor,
    p: LIFParams,
    want_b: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dL/dcurrent ``[T, B, N]`` and dL/dbeta of the synaptic neuron."""
    return _backward(mem, grad_spk, grad_mem, b, p, want_b, synaptic=True)
