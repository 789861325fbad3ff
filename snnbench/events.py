"""Event (sparse) input for the first Linear layer: spikes ``[T, B, N]`` as per-step index lists.

Layer 1 of the temporal SNN multiplies a ``[T*B, 784]`` spike matrix that is ~87 % zeros
(rate-coded MNIST) by ``W^T``. Here the spikes are kept as events — for each row
``r = t*B + b``, the ascending indices of the inputs that spiked (CSR: ``offsets [T*B+1]``,
``indices [nnz]``) — and

* the forward sums the weight columns of the active inputs (``cur[r] = b + sum_i W[:, i]``);
* the backward accumulates the weight gradient ``dW[:, i] += dcur[r]`` over the events and
  the bias gradient over all rows; the input gets no gradient (it is data).

The forward is ``torch.nn.functional.embedding_bag`` (a sum of weight rows per bag); the
encoder and the weight gradient are numba kernels, parallel on the CPU (numba is a wheel: no
compiler needed). Without numba, :func:`available` is False and callers stay dense.
Everything here is CPU only; results equal the dense ``x @ W^T + b`` within float32
summation-order error.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("snnbench")

try:  # numba is a declared dependency, but the dense path must work without it
    import numba
    from numba import njit, prange

    # numba's OpenMP layer shares libgomp with torch and resets torch's thread count
    # (trainer.num_threads) when it starts; its own thread pool leaves torch alone. That
    # pool ("workqueue") aborts the process when two threads launch parallel kernels at
    # once, so every call into a parallel kernel here goes through :func:`launch` (a lock).
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"
    _NUMBA_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only where numba is missing
    numba = None
    _NUMBA_ERROR = f"{type(exc).__name__}: {exc}"

_WARNED = False


def available() -> bool:
    """True when the event kernels can run (numba importable)."""
    return numba is not None


def warn_unavailable() -> None:
    """Log, once per process, that the event path falls back to dense (numba missing)."""
    global _WARNED
    if not _WARNED:
        log.warning("event input unavailable (%s); layer 1 runs dense", _NUMBA_ERROR)
        _WARNED = True


#: Encodings whose output is binary spikes: the ones event input takes.
SPIKE_ENCODINGS = ("rate", "latency", "delta")


def applies(spiking: bool, engine: str, encoding: str, device: torch.device) -> bool:
    """Whether event input fits: a spiking model on the fused engine, a binary (spike)
    encoding, the CPU."""
    return spiking and engine == "fused" and encoding in SPIKE_ENCODINGS and device.type == "cpu"


def use_events(mode: str, spiking: bool, engine: str, encoding: str, device: torch.device) -> bool:
    """``model.event_input`` -> whether layer 1 gets events: ``off`` never; ``auto`` and
    ``on`` wherever :func:`applies` (faster there: see the README's benchmark) and numba is
    installed (else dense, with one log line)."""
    if mode == "off" or not applies(spiking, engine, encoding, device):
        return False
    if not available():
        warn_unavailable()
        return False
    return True


def set_threads() -> None:
    """numba's threads for this thread's next launch: torch's count, within numba's pool."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


#: Held while a parallel kernel runs: numba's workqueue layer is not thread-safe.
_LAUNCH_LOCK = threading.Lock()


def launch(kernel, *args):
    """Run a ``parallel=True`` kernel with torch's thread count, one launch at a time.

    Callers on other Python threads wait instead of aborting the process (workqueue layer);
    with a thread-safe layer chosen by ``NUMBA_THREADING_LAYER`` the lock costs ~0.1 us.
    """
    with _LAUNCH_LOCK:
        set_threads()
        return kernel(*args)


# ------------------------------------------------------------------------------ kernels

if numba is not None:

    @njit(cache=True)
    def _row_offsets(counts):  # pragma: no cover - compiled
        """CSR offsets ``[R + 1]`` (int64) of rows holding ``counts`` ``[R]`` entries."""
        offsets = np.empty(counts.shape[0] + 1, dtype=np.int64)
        offsets[0] = 0
        for row in range(counts.shape[0]):
            offsets[row + 1] = offsets[row] + counts[row]
        return offsets

    @njit(parallel=True, cache=True)
    def _rate_events_kernel(r, k1, T, B, N):  # pragma: no cover - compiled
        """Rate spikes ``r[t, b, i] <= k1[b, i]`` as CSR (rows t*B + b, ascending inputs).

        r: int16 ``[T*B*N]`` random 15-bit integers; k1: int16 ``[B, N]`` (k - 1, -1 = never).
        Only the inputs that can spike (k1 >= 0) are compared.
        """
        active = np.empty((B, N), dtype=np.int32)
        n_active = np.zeros(B, dtype=np.int64)
        for b in prange(B):
            c = 0
            for i in range(N):
                if k1[b, i] >= 0:
                    active[b, c] = i
                    c += 1
            n_active[b] = c
        R = T * B
        bound = np.empty(R + 1, dtype=np.int64)  # upper bound of each row's events
        bound[0] = 0
        for row in range(R):
            bound[row + 1] = bound[row] + n_active[row % B]
        buf = np.empty(bound[R], dtype=np.int32)
        counts = np.empty(R, dtype=np.int64)
        for row in prange(R):
            b = row % B
            base = row * N
            pos = bound[row]
            c = 0
            for j in range(n_active[b]):  # branch-free: spikes are unpredictable
                i = active[b, j]
                buf[pos + c] = i
                c += np.int64(r[base + i] <= k1[b, i])
            counts[row] = c
        offsets = _row_offsets(counts)
        indices = np.empty(offsets[R], dtype=np.int32)
        for row in prange(R):
            src, dst = bound[row], offsets[row]
            for j in range(counts[row]):
                indices[dst + j] = buf[src + j]
        return offsets, indices

    @njit(parallel=True, cache=True)
    def _dense_events_kernel(x, R, N):  # pragma: no cover - compiled
        """Nonzero entries of ``x`` (float32 ``[R*N]``, values {0, 1}) as CSR; -1 offsets[0]
        flags a value other than 0 or 1."""
        counts = np.zeros(R, dtype=np.int64)
        bad = np.zeros(R, dtype=np.bool_)
        for row in prange(R):
            c = 0
            base = row * N
            for i in range(N):
                v = x[base + i]
                if v != 0.0:
                    c += 1
                    if v != 1.0:
                        bad[row] = True
            counts[row] = c
        offsets = _row_offsets(counts)
        indices = np.empty(offsets[R], dtype=np.int32)
        for row in prange(R):
            pos = offsets[row]
            base = row * N
            for i in range(N):
                if x[base + i] != 0.0:
                    indices[pos] = i
                    pos += 1
        if bad.any():
            offsets[0] = -1
        return offsets, indices

    @njit(parallel=True, cache=True)
    def _wgrad_kernel(offsets, indices, g, n_in, n_chunks):  # pragma: no cover - compiled
        """``dWT[i] = sum over events (r, i) of g[r]``, ``[n_in, O]``: rows split into
        ``n_chunks`` contiguous chunks, one private accumulator each, summed at the end."""
        R = g.shape[0]
        n_out = g.shape[1]
        part = np.zeros((n_chunks, n_in, n_out), dtype=g.dtype)
        step = (R + n_chunks - 1) // n_chunks
        for c in prange(n_chunks):
            acc = part[c]
            for row in range(c * step, min(R, (c + 1) * step)):
                gr = g[row]
                for j in range(offsets[row], offsets[row + 1]):
                    a = acc[indices[j]]
                    for o in range(n_out):
                        a[o] += gr[o]
        out = np.empty((n_in, n_out), dtype=g.dtype)
        for i in prange(n_in):
            for o in range(n_out):
                s = part[0, i, o]
                for c in range(1, n_chunks):
                    s += part[c, i, o]
                out[i, o] = s
        return out


# ------------------------------------------------------------------------------ the events


@dataclass(frozen=True)
class SpikeEvents:
    """Binary spikes ``[T, B, N]`` as CSR over rows ``r = t*B + b``.

    offsets: int64 ``[T*B + 1]``; indices: int32 ``[nnz]`` (ascending within a row), the
    inputs that spiked at step t in sample b. CPU tensors. Behaves like the dense spike
    tensor where the models and metrics need it: ``shape``, ``dim()``, ``x[:, :k]``.
    """

    offsets: torch.Tensor
    indices: torch.Tensor
    num_steps: int
    batch: int
    features: int

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.num_steps, self.batch, self.features))

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def dim(self) -> int:
        return 3

    @property
    def nnz(self) -> int:
        return int(self.indices.numel())

    def row_counts(self) -> torch.Tensor:
        """Spikes per (t, b), int64 ``[T, B]``."""
        return torch.diff(self.offsets).view(self.num_steps, self.batch)

    def input_counts(self) -> torch.Tensor:
        """Spikes per input feature summed over all rows, int64 ``[N]``."""
        return torch.bincount(self.indices.long(), minlength=self.features)

    def to_dense(self) -> torch.Tensor:
        """The spike tensor, float32 ``[T, B, N]``."""
        R = self.num_steps * self.batch
        out = torch.zeros(R, self.features, dtype=torch.float32)
        rows = torch.repeat_interleave(torch.arange(R), torch.diff(self.offsets))
        out[rows, self.indices.long()] = 1.0
        return out.view(self.num_steps, self.batch, self.features)

    def first(self, k: int) -> SpikeEvents:
        """The events of the first ``k`` samples (``x[:, :k]`` of the dense tensor)."""
        T, B = self.num_steps, self.batch
        k = max(0, min(k, B))
        counts = torch.diff(self.offsets).view(T, B)
        rows = torch.repeat_interleave(torch.arange(T * B), counts.reshape(-1))
        keep = (rows % B) < k
        kept = counts[:, :k].reshape(-1)
        offsets = torch.zeros(T * k + 1, dtype=torch.int64)
        torch.cumsum(kept, 0, out=offsets[1:])
        return SpikeEvents(offsets, self.indices[keep].contiguous(), T, k, self.features)

    def __getitem__(self, key) -> SpikeEvents:
        """Only ``x[:, :k]`` (the first k samples, as ``spiking_metrics`` and rasters cut)."""
        if (
            isinstance(key, tuple)
            and len(key) == 2
            and key[0] == slice(None)
            and isinstance(key[1], slice)
            and key[1].start in (None, 0)
            and key[1].step in (None, 1)
        ):
            stop = self.batch if key[1].stop is None else key[1].stop
            return self.first(stop if stop >= 0 else self.batch + stop)
        raise TypeError("SpikeEvents supports only x[:, :k] (the first k samples)")


def from_dense(x: torch.Tensor) -> SpikeEvents:
    """Events of a {0, 1} spike tensor ``[T, B, N]`` (ValueError for any other value)."""
    if x.dim() != 3:
        raise ValueError(f"spikes must be [T, B, N], got shape {tuple(x.shape)}")
    T, B, N = x.shape
    flat = x.detach().to("cpu", torch.float32).contiguous().view(-1).numpy()
    offsets, indices = launch(_dense_events_kernel, flat, T * B, N)
    if offsets[0] < 0:
        raise ValueError("event input needs spike values in {0, 1}")
    return SpikeEvents(torch.from_numpy(offsets), torch.from_numpy(indices), T, B, N)


def rate_events(r: torch.Tensor, k1: torch.Tensor) -> SpikeEvents:
    """Events of the rate code ``r <= k1``: r int16 ``[T, B, N]``, k1 int16 ``[B, N]``."""
    T, B, N = r.shape
    offsets, indices = launch(
        _rate_events_kernel, r.contiguous().view(-1).numpy(), k1.contiguous().numpy(), T, B, N
    )
    return SpikeEvents(torch.from_numpy(offsets), torch.from_numpy(indices), T, B, N)


# ------------------------------------------------------------------------------ the layer


def event_forward(events: SpikeEvents, weight: torch.Tensor, bias: torch.Tensor | None):
    """``x @ W^T + b`` for event input: weight ``[O, N]`` -> current float32 ``[T*B, O]``.

    One bag of weight columns per row (``embedding_bag`` in sum mode over ``W^T``: torch's
    optimised CPU kernel for exactly this sum), then the bias.
    """
    wt = weight.detach().t().contiguous()
    idx = events.indices if events.nnz < 2**31 else events.indices.long()
    offsets = events.offsets.to(idx.dtype)  # embedding_bag wants one index dtype
    out = F.embedding_bag(idx, wt, offsets, mode="sum", include_last_offset=True)
    if bias is not None:
        out.add_(bias.detach())
    return out


def event_weight_grad(events: SpikeEvents, grad: torch.Tensor) -> torch.Tensor:
    """``grad^T @ x`` for event input: grad ``[T*B, O]`` -> weight gradient ``[O, N]``."""
    g = grad.detach().contiguous()
    n_chunks = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    wt = launch(
        _wgrad_kernel,
        events.offsets.numpy(),
        events.indices.numpy(),
        g.numpy(),
        events.features,
        n_chunks,
    )
    return torch.from_numpy(wt).t().contiguous()


class _EventLinear(torch.autograd.Function):
    """(weight [O, N], bias [O] | None) -> current ``[T*B, O]`` for fixed event input."""

    @staticmethod
    def forward(ctx, weight, bias, events: SpikeEvents):
        # the events are data (no input gradient); saved so that memory accounting sees them
        ctx.save_for_backward(events.offsets, events.indices)
        ctx.shape = events.shape
        return event_forward(events, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        offsets, indices = ctx.saved_tensors
        events = SpikeEvents(offsets, indices, *ctx.shape)
        grad_w = event_weight_grad(events, grad) if ctx.needs_input_grad[0] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[1] else None
        return grad_w, grad_b, None


def event_linear(events: SpikeEvents, linear: torch.nn.Linear) -> torch.Tensor:
    """``linear`` applied to event input: current float32 ``[T, B, out_features]``."""
    if linear.weight.device.type != "cpu":
        raise ValueError("event input runs on the CPU only")
    cur = _EventLinear.apply(linear.weight, linear.bias, events)
    return cur.view(events.num_steps, events.batch, -1)
