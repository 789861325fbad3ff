"""Event (sparse) input for the first Linear layer: spikes ``[T, B, N]`` as per-step index lists.

Layer 1 of the temporal SNN multiplies a ``[T*B, 784]`` spike matrix that is ~87 % zeros
(rate-coded MNIST) by ``W^T``. Here the spikes are kept as events — for each row
``r = t*B + b``, the ascending indices of the inputs that spiked (CSR: ``offsets [T*B+1]``,
``indices [nnz]``) — and

* the forward sums the weight columns of the active inputs (``cur[r] = b + sum_i W[:, i]``);
* the backward accumulates the weight gradient ``dW[:, i] += dcur[r]`` over the events and
  the bias gradient over all rows; the input gets no gradient (it is data).

From T = 8 on both run by sample (:class:`StepBits`: per sample and input the steps it
spiked at, as bits): a (sample, input) pair that spiked at k of T steps costs k row
operations, or, where T - k + 1 < k (a bright pixel), one on the sample's all-steps part
and T - k on its silent steps — about half the operations of one per event for rate-coded
MNIST at T=100 forward, a quarter backward (where a pair's sum is formed in cache and added
once). At smaller T they run event by event (the forward is ``embedding_bag``, a sum of
weight rows per row of events). The encoder, forward and weight gradient are numba kernels,
parallel on the CPU (numba is a wheel: no compiler needed). Without numba,
:func:`available` is False and callers stay dense. Everything here is CPU only; results
equal the dense ``x @ W^T + b`` within float32 summation-order error.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("snnbench")

try:  # numba is a declared dependency, but the dense path must work without it
    import numba
    from numba import njit, prange

    _NUMBA_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised only where numba is missing
    numba = None
    _NUMBA_ERROR = f"{type(exc).__name__}: {exc}"


def _torch_openmp() -> str | None:
    """The file of the GNU OpenMP runtime in the process's global symbol scope, where torch
    runs on OpenMP (Linux: torch loads its ``libgomp`` globally); None elsewhere.

    A library loaded later, such as numba's OpenMP layer, binds its OpenMP calls to that
    runtime even when it brings another ``libgomp`` file along."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        address = ctypes.cast(ctypes.CDLL(None).GOMP_parallel, ctypes.c_void_p).value
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                start, end = (int(v, 16) for v in fields[0].split("-"))
                if start <= address < end and len(fields) > 5:
                    return fields[5]
    except (AttributeError, OSError, ValueError, TypeError):
        pass
    return None


def threading_layer() -> str:
    """numba's pool for the parallel kernels: ``omp`` where torch's GNU OpenMP is in the
    global scope (numba's OpenMP layer then runs on it: one pool of threads serves the torch
    ops and the kernels in turn; two pools on the same cores, each spinning while the other
    works, made a 2-thread training step as slow as a 1-thread one), else ``workqueue``
    (numba's own pool), also where numba's OpenMP layer cannot load (it needs the system's
    ``libgomp``). ``NUMBA_THREADING_LAYER`` set by the user wins."""
    return "omp" if _torch_openmp() is not None and _omp_layer_loads() else "workqueue"


def _omp_layer_loads() -> bool:
    """Whether numba's OpenMP threading layer can be imported (no pool is started)."""
    try:
        from numba.np.ufunc import omppool  # noqa: F401
    except ImportError:
        return False
    return True


_LAYER = os.environ.get("NUMBA_THREADING_LAYER", "").lower() or threading_layer()
if numba is not None and "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = _LAYER

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


#: Work (elements) from which a kernel is split over threads: below it a parallel launch
#: costs more than it saves, and the kernel runs on the calling thread. A launch on torch's
#: OpenMP pool (threads already up) costs ~5 us, one on numba's own pool ~0.13 ms (the
#: 2-thread leaky forward breaks even at ~10^5 and ~10^6 elements).
PARALLEL_MIN = 1 << 17 if _LAYER == "omp" else 1 << 20
#: From this many steps on, the layer runs by sample (:class:`StepBits`); below, event by
#: event (at T=5 both cost the same, at T=1 the per-pair work costs 2.5x; T=8: by sample
#: 15 % (forward) and 30 % (weight gradient) faster).
BY_SAMPLE_MIN_STEPS = 8
#: The same for the weight gradient, whose by-sample form splits over threads (the
#: event-by-event one runs on the calling thread): at T=5, B=128 it took 0.90 ms on two
#: threads against 1.17 ms event by event (1.33 on one thread); at T=2 0.87 against 0.64.
WGRAD_BY_SAMPLE_MIN_STEPS = 5
#: Additions of the layer's kernels (forward, weight gradient) that count as one element of
#: work.
WGRAD_ADDS_PER_ELEMENT = 16
#: By sample, the weight gradient is summed as this many partial gradients (one per range
#: of samples, each on one thread at a time), added in order: the same sums on any thread
#: count up to this many.
WGRAD_PARTS = 4


def threads_for(work: int) -> int:
    """Threads for a kernel over ``work`` elements: torch's count, or 1 below
    :data:`PARALLEL_MIN` and in a forked child that cannot launch (:func:`launch`)."""
    if work < PARALLEL_MIN or _POOL.forked:
        return 1
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


@dataclass
class _Pool:
    """What this process knows of numba's thread pool."""

    started_in: int | None = None  # the pid that launched a parallel kernel first
    forked: bool = False  # a fork of a process whose GNU OpenMP pool ran: no launch here
    serial: dict = field(default_factory=dict)  # parallel kernel -> its serial twin


_POOL = _Pool()
#: Held while a parallel kernel runs: numba's workqueue layer is not thread-safe.
_LAUNCH_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    # GNU OpenMP cannot run in a fork of a process that started it: numba's OpenMP layer
    # terminates the child on its first launch, so the child runs the kernels serially
    if _POOL.started_in is not None and numba.threading_layer() == "omp":
        _POOL.forked = True


if numba is not None:
    os.register_at_fork(after_in_child=_after_fork_in_child)


def launch(kernel, *args):
    """Run a ``parallel=True`` kernel with torch's thread count, one launch at a time.

    Callers on other Python threads wait instead of aborting the process (workqueue layer).
    The OpenMP layer sets the runtime's thread count (torch's) to numba's when its pool
    starts; torch's count is put back. In a forked child that cannot launch, the kernel's
    serial twin (the same code, compiled without ``parallel``) runs on the calling thread.
    """
    if _POOL.forked:
        serial = _POOL.serial.get(kernel)
        if serial is None:
            serial = _POOL.serial[kernel] = njit(error_model="numpy")(kernel.py_func)
        return serial(*args)
    with _LAUNCH_LOCK:
        torch_threads = torch.get_num_threads()
        numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            return kernel(*args)
        finally:
            if _POOL.started_in is None:
                _POOL.started_in = os.getpid()
            if torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)


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

    # Rate spikes from a counter-based generator: SplitMix64 at position n of the stream
    # keyed by one 64-bit word per batch, n = ((b * N + i) * G + g) + 1 for sample b,
    # input i and group g of four steps (G = ceil(T / 4)); each 64-bit output gives four
    # uniform 15-bit lanes (bits 16l .. 16l+14), lane l for step t = 4g + l; a spike is
    # lane <= k1[b, i] (P = k / 32768 exactly). snnbench.maths.encoding.rate_torch is the same
    # sampler in torch ops (any device).

    @njit(cache=True, inline="always", error_model="numpy")
    def _splitmix(key, n):  # pragma: no cover - compiled
        z = key + n * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    @njit(cache=True, error_model="numpy")
    def _active_inputs(k1):  # pragma: no cover - compiled
        """Per sample the inputs that can spike (k1 >= 0), ascending: ``[B, N]``, counts."""
        B, N = k1.shape
        active = np.empty((B, N), dtype=np.int32)
        n_active = np.zeros(B, dtype=np.int64)
        for b in range(B):
            c = 0
            for i in range(N):
                active[b, c] = i
                c += np.int64(k1[b, i] >= 0)
            n_active[b] = c
        return active, n_active

    @njit(cache=True, error_model="numpy")
    def _rate_draw_sample(key, k1, active, n_active, T, b, counts, bits):  # pragma: no cover
        """Sample b: the four steps' spikes of each active input per group as bits
        ``bits[b, g, j]`` (bit l: step 4g + l) and the spikes per step in ``counts[:, b]``.

        The inputs' counters and thresholds are gathered into contiguous arrays first, so
        the hash loop is vectorised."""
        N = k1.shape[1]
        G = (T + 3) // 4
        n = n_active[b]
        base = np.empty(n, dtype=np.uint64)
        kk = np.empty(n, dtype=np.int64)
        for j in range(n):
            i = active[b, j]
            base[j] = np.uint64((b * N + i) * G + 1)
            kk[j] = k1[b, i]
        mask = np.uint64(0x7FFF)
        one = np.uint8(1)
        for g in range(G):
            bg = bits[b, g]
            c0 = c1 = c2 = c3 = 0
            for j in range(n):
                z = _splitmix(key, base[j] + np.uint64(g))
                k = kk[j]
                s0 = np.int64(np.int64(z & mask) <= k)
                s1 = np.int64(np.int64((z >> np.uint64(16)) & mask) <= k)
                s2 = np.int64(np.int64((z >> np.uint64(32)) & mask) <= k)
                s3 = np.int64(np.int64((z >> np.uint64(48)) & mask) <= k)
                c0 += s0
                c1 += s1
                c2 += s2
                c3 += s3
                bg[j] = np.uint8(s0 | (s1 << 1) | (s2 << 2) | (s3 << 3))
            t = 4 * g
            counts[t, b] = c0
            if t + 1 < T:
                counts[t + 1, b] = c1
            if t + 2 < T:
                counts[t + 2, b] = c2
            if t + 3 < T:
                counts[t + 3, b] = c3
        return one

    @njit(cache=True, error_model="numpy")
    def _rate_fill_rows(active, n_active, B, bits, offsets, indices, r0, r1):  # pragma: no cover
        """Writes CSR rows ``r0:r1`` (r = t*B + b) from the bits. Branch-free: each input is
        stored at the row's cursor, which advances only on a spike — so one store may land
        past the row's end, where the next row of the range overwrites it; a row ending where
        the range ends (the slot belongs to another thread) is written with a branch."""
        end = offsets[r1]
        for r in range(r0, r1):
            t, b = r // B, r % B
            bg = bits[b, t // 4]
            sh = np.uint8(t % 4)
            act = active[b]
            pos = offsets[r]
            if offsets[r + 1] < end:
                for j in range(n_active[b]):
                    indices[pos] = act[j]
                    pos += np.int64((bg[j] >> sh) & np.uint8(1))
            else:
                for j in range(n_active[b]):
                    if (bg[j] >> sh) & np.uint8(1):
                        indices[pos] = act[j]
                        pos += 1

    @njit(cache=True, error_model="numpy")
    def _rate_events_serial(key, k1, T):  # pragma: no cover - compiled
        """:func:`_rate_events_kernel` on the calling thread (small batches: no launch)."""
        B, N = k1.shape
        active, n_active = _active_inputs(k1)
        counts = np.empty((T, B), dtype=np.int64)
        bits = np.empty((B, (T + 3) // 4, N), dtype=np.uint8)
        for b in range(B):
            _rate_draw_sample(key, k1, active, n_active, T, b, counts, bits)
        offsets = _row_offsets(counts.reshape(-1))
        indices = np.empty(offsets[T * B] + 1, dtype=np.int32)
        _rate_fill_rows(active, n_active, B, bits, offsets, indices, 0, T * B)
        return offsets, indices[: offsets[T * B]], active, n_active, bits

    @njit(parallel=True, cache=True, error_model="numpy")
    def _rate_events_kernel(key, k1, T, n_chunks):  # pragma: no cover - compiled
        """Rate spikes of thresholds k1 int16 ``[B, N]`` (k - 1, -1 = never) as CSR (rows
        t*B + b, ascending inputs): draw (only inputs that can spike) and count per sample,
        then fill contiguous ranges of rows."""
        B, N = k1.shape
        G = (T + 3) // 4
        active, n_active = _active_inputs(k1)
        counts = np.empty((T, B), dtype=np.int64)
        bits = np.empty((B, G, N), dtype=np.uint8)
        for b in prange(B):
            _rate_draw_sample(key, k1, active, n_active, T, b, counts, bits)
        offsets = _row_offsets(counts.reshape(-1))
        R = T * B
        indices = np.empty(offsets[R] + 1, dtype=np.int32)  # + 1: the last stray store
        step = (R + n_chunks - 1) // n_chunks
        for c in prange(n_chunks):
            r0 = min(R, c * step)
            _rate_fill_rows(active, n_active, B, bits, offsets, indices, r0, min(R, r0 + step))
        return offsets, indices[: offsets[R]], active, n_active, bits

    @njit(parallel=True, cache=True, error_model="numpy")
    def _rate_dense_kernel(key, k1, T, out):  # pragma: no cover - compiled
        """The same spikes dense: out float32 ``[T, B, N]`` (every input, no skipping)."""
        B, N = k1.shape
        G = (T + 3) // 4
        mask = np.uint64(0x7FFF)
        one, zero = np.float32(1.0), np.float32(0.0)
        for bg in prange(B * G):
            b, g = bg // G, bg % G
            t = 4 * g
            o0 = out[t, b]
            o1 = out[min(t + 1, T - 1), b]  # a step past T is written to T-1 first, then
            o2 = out[min(t + 2, T - 1), b]  # overwritten by its own lane below
            o3 = out[min(t + 3, T - 1), b]
            for i in range(N):
                z = _splitmix(key, np.uint64((b * N + i) * G + g + 1))
                k = np.int64(k1[b, i])
                o3[i] = one if np.int64((z >> np.uint64(48)) & mask) <= k else zero
                o2[i] = one if np.int64((z >> np.uint64(32)) & mask) <= k else zero
                o1[i] = one if np.int64((z >> np.uint64(16)) & mask) <= k else zero
                o0[i] = one if np.int64(z & mask) <= k else zero

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

    # The layer's forward and weight gradient by sample: for sample b and input i, the
    # steps at which it spiked are the set bits of ``bits[b, :, j]`` (bit l of group g: step
    # 4g + l; ``i = active[b, j]``). A pair (b, i) that spiked at k of T steps adds its weight
    # column to (forward) or its gradient rows into (weight gradient) k rows - or, when
    # T - k + 1 < k, the sum over all T steps minus the T - k silent ones: for a bright pixel
    # (p near 1) a few operations instead of ~T. Rate-coded MNIST at T=100 needs ~1/4 of the
    # per-event additions this way.

    @njit(cache=True, inline="always")
    def _popcount(x):  # pragma: no cover - compiled
        x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
        x = (x & np.uint64(0x3333333333333333)) + (
            (x >> np.uint64(2)) & np.uint64(0x3333333333333333)
        )
        x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
        return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))

    _DEBRUIJN = np.zeros(64, dtype=np.int64)
    for _i in range(64):
        _DEBRUIJN[((1 << _i) * 0x03F79D71B4CB0A89 % 2**64) >> 58] = _i

    @njit(cache=True, inline="always")
    def _lowest_bit(x):  # pragma: no cover - compiled
        """Index of the lowest set bit of x != 0 (de Bruijn multiplication)."""
        low = x & (~x + np.uint64(1))
        return _DEBRUIJN[np.int64((low * np.uint64(0x03F79D71B4CB0A89)) >> np.uint64(58))]

    @njit(cache=True, error_model="numpy", boundscheck=False)
    def _step_words(bits, b, n, T, words, tmask):  # pragma: no cover - compiled
        """Sample b's step bits as words ``[n, W]`` (64 steps a word), steps >= T cleared."""
        G = (T + 3) // 4
        W = words.shape[1]
        for j in range(n):
            for w in range(W):
                words[j, w] = 0
        for q in range(G):
            w, sh = q // 16, np.uint64(4 * (q % 16))
            row = bits[b, q]
            for j in range(n):
                words[j, w] |= np.uint64(row[j] & np.uint8(15)) << sh
        for j in range(n):
            for w in range(W):
                words[j, w] &= tmask[w]

    @njit(cache=True, error_model="numpy", boundscheck=False)
    def _pair_steps(words, j, T, steps):  # pragma: no cover - compiled
        """Pair j's steps to visit into ``steps``: (count, complement?) - its spiking
        steps, or its silent ones when those are fewer (T - k + 1 < k); count 0: no spike."""
        W = words.shape[1]
        k = 0
        for w in range(W):
            k += _popcount(words[j, w])
        if k == 0:
            return 0, False
        comp = T - k + 1 < k
        m = 0
        for w in range(W):
            v = words[j, w]
            if comp:
                nb = min(64, T - 64 * w)
                full = np.uint64(0xFFFFFFFFFFFFFFFF)
                v = ~v & (full if nb == 64 else (np.uint64(1) << np.uint64(nb)) - np.uint64(1))
            while v:
                steps[m] = 64 * w + _lowest_bit(v)
                m += 1
                v &= v - np.uint64(1)
        return m, comp

    @njit(cache=True, error_model="numpy", boundscheck=False)
    def _step_masks(T):  # pragma: no cover - compiled
        W = (T + 63) // 64
        tmask = np.empty(W, dtype=np.uint64)
        for w in range(W):
            nb = min(64, T - 64 * w)
            full = np.uint64(0xFFFFFFFFFFFFFFFF)
            tmask[w] = full if nb == 64 else (np.uint64(1) << np.uint64(nb)) - np.uint64(1)
        return tmask

    @njit(cache=True, error_model="numpy", boundscheck=False)
    def _wgrad_rows(active, n_active, bits, g, T, acc, gsum, b0, b1):  # pragma: no cover
        """Samples ``b0:b1``'s part of ``acc[i] += sum over steps t where input i of sample
        b spiked of g[t*B + b]``: g ``[T*B, O]``, acc ``[N, O]`` (zeros on entry); ``gsum[O]``
        gets the sum of their rows (the bias gradient, from the per-sample sums it needs
        anyway)."""
        B, N = active.shape
        n = g.shape[1]
        gb = np.empty((T, n), dtype=g.dtype)  # sample b's rows, contiguous (no set conflicts)
        tot = np.empty(n, dtype=g.dtype)
        tmp = np.empty(n, dtype=g.dtype)
        steps = np.empty(T, dtype=np.int64)
        tmask = _step_masks(T)
        words = np.empty((N, tmask.shape[0]), dtype=np.uint64)
        for b in range(b0, b1):
            na = n_active[b]
            for o in range(n):
                tot[o] = 0
            for t in range(T):
                src, dst = g[t * B + b], gb[t]
                for o in range(n):
                    x = src[o]
                    dst[o] = x
                    tot[o] += x
            for o in range(n):
                gsum[o] += tot[o]
            _step_words(bits, b, na, T, words, tmask)
            for j in range(na):
                m, comp = _pair_steps(words, j, T, steps)
                if m == 0 and not comp:
                    continue
                if comp:
                    for o in range(n):
                        tmp[o] = tot[o]
                else:
                    for o in range(n):
                        tmp[o] = 0
                s = 0
                while s + 4 <= m:
                    r0, r1 = gb[steps[s]], gb[steps[s + 1]]
                    r2, r3 = gb[steps[s + 2]], gb[steps[s + 3]]
                    if comp:
                        for o in range(n):
                            tmp[o] -= (r0[o] + r1[o]) + (r2[o] + r3[o])
                    else:
                        for o in range(n):
                            tmp[o] += (r0[o] + r1[o]) + (r2[o] + r3[o])
                    s += 4
                while s < m:
                    r0 = gb[steps[s]]
                    if comp:
                        for o in range(n):
                            tmp[o] -= r0[o]
                    else:
                        for o in range(n):
                            tmp[o] += r0[o]
                    s += 1
                a = acc[active[b, j]]
                for o in range(n):
                    a[o] += tmp[o]

    @njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
    def _wgrad_par(active, n_active, bits, g, T, parts, psums):  # pragma: no cover
        """:func:`_wgrad_rows` of the ``P`` sample ranges into ``parts[p]`` ``[N, O]`` and
        ``psums[p]`` ``[O]``, the ranges split over the threads."""
        B, P = active.shape[0], parts.shape[0]
        step = (B + P - 1) // P
        for p in prange(P):
            b0 = min(B, p * step)
            _wgrad_rows(active, n_active, bits, g, T, parts[p], psums[p], b0, min(B, b0 + step))

    @njit(cache=True, error_model="numpy", boundscheck=False)
    def _fwd_rows(active, n_active, bits, wt, bias, T, out, b0, b1):  # pragma: no cover
        """The rows of samples ``b0:b1`` of ``out[t*B + b] = (sum of wt[i] over the inputs i
        that spiked at step t in sample b) + bias``: wt ``[N, O]``, bias ``[O]`` or ``[0]``
        (none), out ``[T*B, O]``. A pair that spiked at most steps goes into the sample's
        all-steps part once and out of its silent steps."""
        B, N = active.shape
        n = wt.shape[1]
        cb = np.empty((T, n), dtype=wt.dtype)  # sample b's rows, contiguous
        every = np.empty(n, dtype=wt.dtype)  # the columns of the pairs taken as complements
        steps = np.empty(T, dtype=np.int64)
        tmask = _step_masks(T)
        words = np.empty((N, tmask.shape[0]), dtype=np.uint64)
        for b in range(b0, b1):
            na = n_active[b]
            for t in range(T):
                c = cb[t]
                for o in range(n):
                    c[o] = 0
            for o in range(n):
                every[o] = 0
            _step_words(bits, b, na, T, words, tmask)
            for j in range(na):
                m, comp = _pair_steps(words, j, T, steps)
                if m == 0 and not comp:
                    continue
                w = wt[active[b, j]]
                if comp:
                    for o in range(n):
                        every[o] += w[o]
                    for s in range(m):
                        c = cb[steps[s]]
                        for o in range(n):
                            c[o] -= w[o]
                else:
                    for s in range(m):
                        c = cb[steps[s]]
                        for o in range(n):
                            c[o] += w[o]
            for t in range(T):
                c, dst = cb[t], out[t * B + b]
                if bias.shape[0]:
                    for o in range(n):
                        dst[o] = (every[o] + c[o]) + bias[o]
                else:
                    for o in range(n):
                        dst[o] = every[o] + c[o]

    @njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
    def _fwd_par(active, n_active, bits, wt, bias, T, out, n_chunks):  # pragma: no cover
        """:func:`_fwd_rows` with the samples split over ``n_chunks`` threads (each output
        row is one thread's: the same sums on any thread count)."""
        B = active.shape[0]
        step = (B + n_chunks - 1) // n_chunks
        for c in prange(n_chunks):
            b0 = min(B, c * step)
            _fwd_rows(active, n_active, bits, wt, bias, T, out, b0, min(B, b0 + step))

    @njit(cache=True, error_model="numpy", boundscheck=False)
    def _wgrad_csr(offsets, indices, g, acc):  # pragma: no cover - compiled
        """``acc[i] += g[r]`` for every event (r, i), in row order (small T, where the
        by-sample form's per-pair work does not pay)."""
        n = g.shape[1]
        for row in range(g.shape[0]):
            gr = g[row]
            for j in range(offsets[row], offsets[row + 1]):
                a = acc[indices[j]]
                for o in range(n):
                    a[o] += gr[o]

    @njit(cache=True, error_model="numpy", boundscheck=False)
    def _bits_from_csr(offsets, indices, T, B, N):  # pragma: no cover - compiled
        """Step bits ``[B, G, N]`` of CSR events, indexed by input (active = every input)."""
        bits = np.zeros((B, (T + 3) // 4, N), dtype=np.uint8)
        for r in range(T * B):
            t, b = r // B, r % B
            row = bits[b, t >> 2]
            bit = np.uint8(1 << (t & 3))
            for e in range(offsets[r], offsets[r + 1]):
                row[indices[e]] |= bit
        active = np.empty((B, N), dtype=np.int32)
        n_active = np.empty(B, dtype=np.int64)
        for b in range(B):
            n_active[b] = N
            for i in range(N):
                active[b, i] = i
        return active, n_active, bits


# ------------------------------------------------------------------------------ the events


@dataclass(frozen=True)
class StepBits:
    """The same spikes by sample: for sample b, its inputs that can spike, ascending,
    ``active[b, :n_active[b]]`` (int32 ``[B, N]``, int64 ``[B]``), and the steps at which
    ``active[b, j]`` spiked as ``bits[b, g, j]`` (uint8 ``[B, ceil(T/4), N]``, bit l: step
    ``4g + l``; bits of steps >= T are ignored). CPU tensors."""

    active: torch.Tensor
    n_active: torch.Tensor
    bits: torch.Tensor

    def first(self, k: int) -> StepBits:
        return StepBits(self.active[:k], self.n_active[:k], self.bits[:k])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.active.numpy(), self.n_active.numpy(), self.bits.numpy()


def bits_tensors(b: StepBits) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tensors of a :class:`StepBits`, in field order."""
    return b.active, b.n_active, b.bits


@dataclass(frozen=True)
class SpikeEvents:
    """Binary spikes ``[T, B, N]`` as CSR over rows ``r = t*B + b``.

    offsets: int64 ``[T*B + 1]``; indices: int32 ``[nnz]`` (ascending within a row), the
    inputs that spiked at step t in sample b. CPU tensors. Behaves like the dense spike
    tensor where the models and metrics need it: ``shape``, ``dim()``, ``x[:, :k]``.
    ``by_sample``: the same spikes as :class:`StepBits` where the encoder made them (the rate
    encoder does), else None (:meth:`step_bits` builds them).
    """

    offsets: torch.Tensor
    indices: torch.Tensor
    num_steps: int
    batch: int
    features: int
    by_sample: StepBits | None = field(default=None, repr=False, compare=False)

    def step_bits(self) -> StepBits:
        """The spikes by sample (:class:`StepBits`): ``by_sample``, or built from the CSR."""
        if self.by_sample is not None:
            return self.by_sample
        T, B, N = self.shape
        arrays = _bits_from_csr(self.offsets.numpy(), self.indices.numpy(), T, B, N)
        return StepBits(*(torch.from_numpy(a) for a in arrays))

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
        bits = None if self.by_sample is None else self.by_sample.first(k)
        return SpikeEvents(offsets, self.indices[keep].contiguous(), T, k, self.features, bits)

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


def rate_events(key: int, k1: torch.Tensor, num_steps: int) -> SpikeEvents:
    """Events of the rate code keyed by ``key`` (see :func:`snnbench.maths.encoding.rate`):
    k1 int16 ``[B, N]`` (spike where a 15-bit lane <= k1)."""
    B, N = k1.shape
    args = (np.uint64(key % 2**64), k1.contiguous().numpy(), num_steps)
    n = threads_for(num_steps * B * N)
    if n == 1:
        out = _rate_events_serial(*args)
    else:
        out = launch(_rate_events_kernel, *args, 4 * n)
    offsets, indices, *by_sample = (torch.from_numpy(a) for a in out)
    return SpikeEvents(offsets, indices, num_steps, B, N, StepBits(*by_sample))


def rate_dense(key: int, k1: torch.Tensor, num_steps: int) -> torch.Tensor:
    """The spikes of :func:`rate_events` as float32 ``[T, B, N]`` (CPU)."""
    B, N = k1.shape
    out = torch.empty(num_steps, B, N, dtype=torch.float32)
    if out.numel():
        launch(
            _rate_dense_kernel,
            np.uint64(key % 2**64),
            k1.contiguous().numpy(),
            num_steps,
            out.numpy(),
        )
    return out


# ------------------------------------------------------------------------------ the layer


def _autocast_bf16() -> bool:
    """Whether a CPU bfloat16 autocast region is active (``trainer.precision=bf16-mixed``)."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        on, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    else:  # pragma: no cover - older torch
        on, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return on and dtype == torch.bfloat16


def event_forward(events: SpikeEvents, weight: torch.Tensor, bias: torch.Tensor | None):
    """``x @ W^T + b`` for event input: weight ``[O, N]`` -> current ``[T*B, O]``.

    From T = :data:`BY_SAMPLE_MIN_STEPS` on, by sample (:meth:`SpikeEvents.step_bits`):
    each (sample, input) pair adds its weight column to the rows of its spiking steps, or,
    where it spiked at most steps, to the sample's all-steps part and subtracts it from its
    silent steps. Below, one bag of weight columns per row (``embedding_bag`` in sum mode
    over ``W^T``). Then the bias; float32 ``[T*B, O]``. Inside a CPU bfloat16 autocast
    region (``trainer.precision=bf16-mixed``) the columns are the weights rounded to
    bfloat16 and the sum is rounded once to bfloat16, as a dense bf16 Linear's output is;
    the bias is added in float32.
    """
    wt = weight.detach().t().contiguous()
    low = _autocast_bf16()
    if low:
        wt = wt.to(torch.bfloat16)
    T, B, N = events.shape
    if T < BY_SAMPLE_MIN_STEPS:
        idx = events.indices if events.nnz < 2**31 else events.indices.long()
        offsets = events.offsets.to(idx.dtype)  # embedding_bag wants one index dtype
        out = F.embedding_bag(idx, wt, offsets, mode="sum", include_last_offset=True)
        out = out.float()
    else:
        wt = wt.float()
        out = torch.empty(T * B, wt.shape[1], dtype=torch.float32)
        # float32: the bias is added in the kernel's last pass (same order: sum, then bias)
        fused = torch.empty(0) if bias is None or low else bias.detach().float().contiguous()
        if fused.numel():
            bias = None
        if out.numel():
            active, n_active, bits = events.step_bits().arrays()
            args = (active, n_active, bits, wt.numpy(), fused.numpy(), T, out.numpy())
            n = min(threads_for(events.nnz * wt.shape[1] // WGRAD_ADDS_PER_ELEMENT), B)
            if n == 1:
                _fwd_rows(*args, 0, B)
            else:
                launch(_fwd_par, *args, n)
        if low:
            out = out.to(torch.bfloat16).float()
    if bias is not None:
        out.add_(bias.detach())
    return out


def event_grads(events: SpikeEvents, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``grad^T @ x`` and ``grad.sum(0)`` for event input: grad ``[T*B, O]`` -> weight
    gradient ``[O, N]`` and bias gradient ``[O]``.

    From T = :data:`WGRAD_BY_SAMPLE_MIN_STEPS` on, by sample (:meth:`SpikeEvents.step_bits`):
    each (sample, input) pair adds the gradient rows of its spiking steps, or the sum over
    all steps minus its silent ones where those are fewer; each pair's sum is added to the
    input's row once; the per-sample sums over all steps add up to the bias gradient.
    The samples are cut into :data:`WGRAD_PARTS` ranges, each summed apart (one thread's
    at a time), and the partial sums are added in order. Below, each event adds its row to
    its input's row, on the calling thread (split over the columns, two threads took twice
    as long as one). Either way the sums do not depend on the thread count.
    """
    g = grad.detach().contiguous()
    if g.dtype != torch.float32:
        g = g.float()
    T, B, N = events.shape
    if T < WGRAD_BY_SAMPLE_MIN_STEPS:
        acc = np.zeros((N, g.shape[1]), dtype=np.float32)
        _wgrad_csr(events.offsets.numpy(), events.indices.numpy(), g.numpy(), acc)
        return torch.from_numpy(acc).t().contiguous(), g.sum(0)
    active, n_active, bits = events.step_bits().arrays()
    P = WGRAD_PARTS
    parts = np.zeros((P, N, g.shape[1]), dtype=np.float32)
    psums = np.zeros((P, g.shape[1]), dtype=np.float32)
    args = (active, n_active, bits, g.numpy(), T, parts, psums)
    if threads_for(events.nnz * g.shape[1] // WGRAD_ADDS_PER_ELEMENT) == 1:
        step = (B + P - 1) // P
        for p in range(P):
            b0 = min(B, p * step)
            _wgrad_rows(*args[:5], parts[p], psums[p], b0, min(B, b0 + step))
    else:
        launch(_wgrad_par, *args)
    acc, gsum = parts[0], psums[0]
    for p in range(1, P):  # in order: the same sums on any thread count
        acc += parts[p]
        gsum += psums[p]
    return torch.from_numpy(acc).t().contiguous(), torch.from_numpy(gsum)


def event_weight_grad(events: SpikeEvents, grad: torch.Tensor) -> torch.Tensor:
    """The weight gradient ``grad^T @ x`` ``[O, N]`` of :func:`event_grads`."""
    return event_grads(events, grad)[0]


class _EventLinear(torch.autograd.Function):
    """(weight [O, N], bias [O] | None) -> current ``[T*B, O]`` for fixed event input."""

    @staticmethod
    def forward(ctx, weight, bias, events: SpikeEvents):
        # the events are data (no input gradient); saved so that memory accounting sees them
        bits = events.by_sample
        ctx.save_for_backward(
            events.offsets, events.indices, *(() if bits is None else bits_tensors(bits))
        )
        ctx.shape = events.shape
        return event_forward(events, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        offsets, indices, *bits = ctx.saved_tensors
        events = SpikeEvents(offsets, indices, *ctx.shape, StepBits(*bits) if bits else None)
        want_w, want_b = ctx.needs_input_grad[:2]
        if want_w:
            grad_w, grad_b = event_grads(events, grad)
        else:
            grad_w, grad_b = None, grad.sum(0)
        grad_b = grad_b.to(grad.dtype) if want_b else None
        return grad_w, grad_b, None


def event_linear(events: SpikeEvents, linear: torch.nn.Linear) -> torch.Tensor:
    """``linear`` applied to event input: current float32 ``[T, B, out_features]`` (see
    :func:`event_forward` for bf16 autocast)."""
    if linear.weight.device.type != "cpu":
        raise ValueError("event input runs on the CPU only")
    cur = _EventLinear.apply(linear.weight, linear.bias, events)
    return cur.view(events.num_steps, events.batch, -1)
