"""Neuron recurrences over time: ``[T, B, N]`` input current -> ``[T, B, N]`` spikes, membranes.

The fused engine applies each layer's Linear once over all ``T*B`` rows and then runs the
neuron recurrence over T here, as **one autograd node per layer**
(:class:`_LeakySeq`, :class:`_SynapticSeq`):

* forward: a loop over T without an autograd graph, writing into preallocated
  ``[T, B, N]`` outputs with in-place ops, in the same floating-point operation order as
  ``snn.Leaky`` / ``snn.Synaptic`` (so spikes are bit-identical to snnTorch's);
* backward: the reset is detached (as in snnTorch), so ``dL/dmem`` obeys a *linear*
  reverse recurrence::

      g[t] = dL/dmem[t] + dL/dspk[t] * sg(mem[t] - thr) + d(mem[t+1])/d(mem[t]) * g[t+1]

  with ``d(mem[t+1])/d(mem[t]) = beta`` (subtract/none) or ``beta * (1 - spk[t])`` (zero),
  run step by step from t = T-1 down to 0; the surrogate ``sg`` and ``dL/dbeta`` (the sum
  of ``g`` times the pre-decay membrane) are computed inside the same loop, on ``[B, N]``
  slices that stay in cache, into reused scratch buffers. (A version with whole-``[T, B, N]``
  passes took 156 ms vs 22 ms for fwd+bwd of a 100x128x256 layer on the loaded 2-core
  test VM: memory traffic, not arithmetic, is the limit.)

Memory: each node saves its membranes and spikes (the spikes are also the next Linear's
input, so they are stored once); no per-step graph. Everything runs on the input's device
(no numpy, no ``.item()``, no host sync in the hot path), so the same code runs on CUDA.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import sys

import torch

from snnbench.maths import lif_cpu
from snnbench.maths.neurons import LIFParams

RESETS = ("subtract", "zero", "none")
#: Reduced-precision dtypes an autocast region gives a Linear/conv; the recurrences take
#: them back to float32 (:func:`_check`).
_LOW_PRECISION = (torch.bfloat16, torch.float16)
_ALLOCATOR_TUNED = False


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in under ``trainer.precision``.

    ``"32"``: nothing changes (a null context: float32 everywhere, bit for bit as without
    it). ``"bf16-mixed"`` (Lightning's name): ``torch.autocast(device.type, bfloat16)`` —
    the dense matmuls and convolutions (``nn.Linear``, ``nn.Conv2d``) run in bfloat16 with
    float32 accumulation (AVX512-BF16/AMX CPUs, CUDA GPUs); weights, optimizer state,
    the event-input layer (sums of weight columns), the neuron recurrences (their state,
    spikes and surrogate gradients) and the loss stay float32.
    """
    if precision == "32":
        return contextlib.nullcontext()
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"trainer.precision={precision!r} is not known; choose 32 or bf16-mixed")


def tune_cpu_allocator(threshold_bytes: int = 1 << 30) -> bool:
    """Keep freed large CPU buffers in the process heap instead of returning them to the OS.

    glibc serves allocations above 32 MB (e.g. the ``[T, B, 784]`` float input at T=100) with
    a fresh ``mmap``, so every training step pays page faults on first touch: allocating and
    filling 40 MB took ~30 ms vs ~2 ms with this setting on the 2-core test VM.
    ``mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD)`` raises both thresholds; the process's
    resident memory then stays at its peak. No numerical effect. Linux/glibc only (returns
    False elsewhere); idempotent.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, threshold_bytes) == 1
        ok = ok and libc.mallopt(m_trim_threshold, threshold_bytes) == 1
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


def _direct_into(
    dst: torch.Tensor,
    mem: torch.Tensor,
    grad_spk: torch.Tensor | None,
    grad_mem: torch.Tensor | None,
    p: LIFParams,
    s1: torch.Tensor,
    s2: torch.Tensor,
) -> None:
    """One step, ``[B, N]``: ``dst = grad_mem + grad_spk * sg(mem - thr)`` (``None`` = 0).

    ``s1``/``s2`` are ``[B, N]`` scratch buffers. The surrogates are those of
    :func:`snnbench.maths.neurons.surrogate_grad`; ``sigmoid`` uses the overflow-free form
    ``slope * s * (1 - s)``, ``s = sigmoid(slope * u)``, where snnTorch's
    ``slope * e / (e + 1)**2``, ``e = exp(-slope * u)``, gives NaN once ``slope * u < -88``
    (float32 overflow of exp); elsewhere they agree.
    """
    if grad_spk is None:
        if grad_mem is None:
            dst.zero_()
        else:
            dst.copy_(grad_mem)
        return
    k = p.surrogate_slope
    torch.sub(mem, p.threshold, out=s1)  # u
    if p.surrogate == "sigmoid":  # k * s * (1 - s)
        s1.mul_(k).sigmoid_()
        torch.mul(s1, s1, out=s2)
        s1.sub_(s2)
        if grad_mem is None:
            torch.mul(grad_spk, s1, out=dst).mul_(k)
        else:
            torch.addcmul(grad_mem, grad_spk, s1, value=k, out=dst)
        return
    if p.surrogate == "atan":  # (k/2) / (1 + (pi/2 * k * u)^2)
        s1.mul_(math.pi / 2 * k).square_().add_(1.0)
        scale = k / 2
    elif p.surrogate == "fast_sigmoid":  # 1 / (k * |u| + 1)^2
        s1.abs_().mul_(k).add_(1.0).square_()
        scale = 1.0
    else:
        raise ValueError(f"neuron.surrogate={p.surrogate!r} is not known")
    if grad_mem is None:
        torch.div(grad_spk, s1, out=dst)
        if scale != 1.0:
            dst.mul_(scale)
    else:
        torch.addcdiv(grad_mem, grad_spk, s1, value=scale, out=dst)


def _at(x: torch.Tensor | None, t: int) -> torch.Tensor | None:
    return None if x is None else x[t]


class _LeakySeq(torch.autograd.Function):
    """``snn.Leaky`` over T steps from a zero state: (current [T,B,N], beta 0-dim) ->
    (spikes [T,B,N], mem [T,B,N]). ``beta`` arrives already clamped to [0, 1]."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, b: torch.Tensor, p: LIFParams):
        ctx.p = p
        ctx.set_materialize_grads(False)
        if lif_cpu.usable(current):  # the same loop compiled: one call instead of 4 ops a step
            spk, mem = lif_cpu.leaky_forward(current, b, p)
            ctx.save_for_backward(mem, spk, b)
            return spk, mem
        T = current.shape[0]
        mem = torch.empty_like(current)
        spk = torch.empty_like(current)
        thr = p.threshold
        mem[0].copy_(current[0])  # beta * 0 + I == I exactly
        torch.gt(mem[0], thr, out=spk[0])
        for t in range(1, T):
            m = mem[t]
            torch.mul(mem[t - 1], b, out=m)
            if p.reset == "zero":  # beta * ((1 - r) * m_prev) + I; (1 - r) * m is exact
                m.addcmul_(m, spk[t - 1], value=-1.0)
            m.add_(current[t])
            if p.reset == "subtract":  # (beta * m_prev + I) - r * thr
                m.sub_(spk[t - 1], alpha=thr)
            torch.gt(m, thr, out=spk[t])
        ctx.save_for_backward(mem, spk, b)
        return spk, mem

    @staticmethod
    def backward(ctx, grad_spk, grad_mem):
        mem, spk, b = ctx.saved_tensors
        p: LIFParams = ctx.p
        want_b = ctx.needs_input_grad[1]
        if lif_cpu.usable(mem):
            g, grad_b = lif_cpu.leaky_backward(mem, grad_spk, grad_mem, b, p, want_b)
            return g, grad_b, None
        T = mem.shape[0]
        g = torch.empty_like(mem)  # total dL/dmem[t] == dL/dcurrent[t]
        s1, s2 = torch.empty_like(mem[0]), torch.empty_like(mem[0])
        acc = torch.zeros_like(mem[0]) if want_b else None
        for t in range(T - 1, -1, -1):
            gt_ = g[t]
            _direct_into(gt_, mem[t], _at(grad_spk, t), _at(grad_mem, t), p, s1, s2)
            if t < T - 1:
                if p.reset == "zero":  # d mem[t+1] / d mem[t] = beta * (1 - spk[t])
                    torch.addcmul(g[t + 1], g[t + 1], spk[t], value=-1.0, out=s1)
                    gt_.addcmul_(s1, b)
                else:
                    gt_.addcmul_(g[t + 1], b)
            if want_b and t > 0:  # d mem[t] / d beta = pre-decay membrane
                if p.reset == "zero":
                    torch.addcmul(mem[t - 1], mem[t - 1], spk[t - 1], value=-1.0, out=s1)
                    acc.addcmul_(gt_, s1)
                else:
                    acc.addcmul_(gt_, mem[t - 1])
        grad_b = acc.sum().to(b.dtype) if want_b else None
        return g, grad_b, None


class _SynapticSeq(torch.autograd.Function):
    """``snn.Synaptic`` over T steps from zero state; same signature as :class:`_LeakySeq`."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, b: torch.Tensor, p: LIFParams):
        ctx.p = p
        ctx.set_materialize_grads(False)
        if lif_cpu.usable(current):  # the same loop compiled (see _LeakySeq)
            spk, mem = lif_cpu.synaptic_forward(current, b, p)
            ctx.save_for_backward(mem, spk, b)
            return spk, mem
        T = current.shape[0]
        mem = torch.empty_like(current)
        spk = torch.empty_like(current)
        thr = p.threshold
        a = torch.tensor(min(max(p.alpha, 0.0), 1.0), dtype=current.dtype, device=current.device)
        syn = current[0].clone()  # alpha * 0 + I == I exactly
        mem[0].copy_(syn)
        torch.gt(mem[0], thr, out=spk[0])
        for t in range(1, T):
            syn.mul_(a).add_(current[t])
            m = mem[t]
            torch.mul(mem[t - 1], b, out=m)
            m.add_(syn)
            if p.reset == "subtract":
                m.sub_(spk[t - 1], alpha=thr)
            elif p.reset == "zero":  # new membrane zeroed where the previous step fired
                m.addcmul_(m, spk[t - 1], value=-1.0)
            torch.gt(m, thr, out=spk[t])
        ctx.save_for_backward(mem, spk, b)
        return spk, mem

    @staticmethod
    def backward(ctx, grad_spk, grad_mem):
        mem, spk, b = ctx.saved_tensors
        p: LIFParams = ctx.p
        if lif_cpu.usable(mem):
            want = ctx.needs_input_grad[1]
            g, grad_b = lif_cpu.synaptic_backward(mem, grad_spk, grad_mem, b, p, want)
            return g, grad_b, None
        T = mem.shape[0]
        a = min(max(p.alpha, 0.0), 1.0)
        out = torch.empty_like(mem)  # dL/dsyn[t] == dL/dcurrent[t]
        s1, s2 = torch.empty_like(mem[0]), torch.empty_like(mem[0])
        # gc: dL/d(pre-reset membrane) = (1 - spk[t-1]) * dL/dmem[t] (zero reset), else dL/dmem
        gc, gc_next = torch.empty_like(mem[0]), torch.empty_like(mem[0])
        want_b = ctx.needs_input_grad[1]
        acc = torch.zeros_like(mem[0]) if want_b else None
        for t in range(T - 1, -1, -1):
            _direct_into(gc, mem[t], _at(grad_spk, t), _at(grad_mem, t), p, s1, s2)
            if t < T - 1:  # mem[t+1] = (beta * mem[t] + syn[t+1]) * c[t+1]
                gc.addcmul_(gc_next, b)
            if p.reset == "zero" and t > 0:
                gc.addcmul_(gc, spk[t - 1], value=-1.0)
            if want_b and t > 0:
                acc.addcmul_(gc, mem[t - 1])
            if t < T - 1:  # dL/dsyn[t] = gc[t] + alpha * dL/dsyn[t+1]
                torch.add(gc, out[t + 1], alpha=a, out=out[t])
            else:
                out[t].copy_(gc)
            gc, gc_next = gc_next, gc
        grad_b = acc.sum().to(b.dtype) if want_b else None
        return out, grad_b, None


def _beta(current: torch.Tensor, p: LIFParams, beta: torch.Tensor | None) -> torch.Tensor:
    """Clamped decay as a 0-dim tensor on the input's device (autograd tracks the clamp)."""
    if beta is None:
        beta = torch.tensor(p.beta, dtype=current.dtype, device=current.device)
    return beta.clamp(0, 1)


def _check(current: torch.Tensor, p: LIFParams) -> torch.Tensor:
    if current.dim() != 3:
        raise ValueError(f"current must be [T, B, N], got shape {tuple(current.shape)}")
    if p.reset not in RESETS:
        raise ValueError(f"neuron.reset={p.reset!r} is not known; choose one of {RESETS}")
    if current.dtype in _LOW_PRECISION:  # a bf16-mixed Linear's output: the state is float32
        current = current.float()
    return current.contiguous()


def leaky_sequence(
    current: torch.Tensor, p: LIFParams, beta: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``snn.Leaky`` over T steps from a zero state.

    current: ``[T, B, N]`` input current. Returns (spikes, membranes), each ``[T, B, N]``.
    ``beta`` (0-dim tensor, possibly learnable) overrides ``p.beta``; clamped to [0, 1].
    """
    current = _check(current, p)
    return _LeakySeq.apply(current, _beta(current, p, beta), p)


def synaptic_sequence(
    current: torch.Tensor, p: LIFParams, beta: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``snn.Synaptic`` over T steps from a zero state; ``[T, B, N]`` in and out."""
    current = _check(current, p)
    return _SynapticSeq.apply(current, _beta(current, p, beta), p)


def neuron_sequence(
    neuron: str, current: torch.Tensor, p: LIFParams, beta: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to :func:`leaky_sequence` or :func:`synaptic_sequence` by neuron name.

    current ``[T, B, N]`` -> (spikes ``[T, B, N]`` in {0, 1}, membranes ``[T, B, N]``).
    """
    if neuron == "leaky":
        return leaky_sequence(current, p, beta)
    if neuron == "synaptic":
        return synaptic_sequence(current, p, beta)
    raise ValueError(f"neuron.name={neuron!r} is not known")
