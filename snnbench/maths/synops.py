"""Synaptic operations of a layer on its input (NeuroBench's rule): pure, tensors in,
counts out. The hooks that count a whole model call these (:mod:`snnbench.networks.hooks`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from snnbench.maths.events import SpikeEvents


def is_spike_valued(x: torch.Tensor, nonzeros: int | None = None) -> bool:
    """True when every value of ``x`` is in {-1, 0, 1} (a layer fed ``x`` does ACs).

    ``nonzeros``: the number of nonzero entries of ``x``, when the caller has it already.
    Values in [-1, 1] are all in {-1, 0, 1} exactly when as many are +-1 as are nonzero.
    """
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    if lo < -1 or hi > 1:
        return False
    if nonzeros is None:
        nonzeros = int(torch.count_nonzero(x))
    unit = x == 1 if lo >= 0 else x.abs() == 1
    return int(torch.count_nonzero(unit)) == nonzeros


@dataclass
class LayerOps:
    """Operation counts of one Linear layer over a batch of inputs (totals, not per sample).

    synops: (nonzero input x nonzero weight) pairs; dense: all pairs; spike_input: whether
    every input value was in {-1, 0, 1} (ACs) or not (MACs); zeros/values: zero and all
    input entries (for the input sparsity).
    """

    synops: int
    dense: int
    spike_input: bool
    zeros: int
    values: int

    @property
    def op(self) -> str:
        return "AC" if self.spike_input else "MAC"

    def times(self, k: int) -> LayerOps:
        """The counts of ``k`` identical applications."""
        return LayerOps(
            self.synops * k, self.dense * k, self.spike_input, self.zeros * k, self.values * k
        )

    def __add__(self, other: LayerOps) -> LayerOps:
        return LayerOps(
            self.synops + other.synops,
            self.dense + other.dense,
            self.spike_input and other.spike_input,
            self.zeros + other.zeros,
            self.values + other.values,
        )


def linear_ops(
    x: torch.Tensor,
    weight: torch.Tensor,
    check_spikes: bool = True,
    weight_nnz: torch.Tensor | None = None,
) -> LayerOps:
    """Synaptic operations of a Linear layer with ``weight [out, in]`` fed ``x``.

    x: ``[T, B, in]`` (SNN), ``[B, in]`` (ANN) or any ``[..., in]``; every leading index is one
    application of the layer. Input ``i`` with a nonzero value drives one operation per
    nonzero weight in column ``i``, so synops = sum_i nnz_in[i] * nnz_w_col[i] (exact,
    in integers). Dense = rows * in * out. Totals over all rows; divide by B for per sample.
    ``check_spikes=False`` skips the {-1, 0, 1} test and reports MACs; ``weight_nnz``: the
    nonzero weights per input column ``[in]``, when the caller has them already.
    """
    n_in = weight.shape[1]
    rows = x.reshape(-1, n_in)
    if rows.shape[0] > _MAX_ROWS:  # keep the float32 column counts below exact
        chunks = rows.split(_MAX_ROWS)
        ops = [linear_ops(c, weight, check_spikes, weight_nnz) for c in chunks]
        return sum(ops[1:], ops[0])
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()  # integer or half inputs: count in float32
    nnz_w = torch.count_nonzero(weight, dim=0) if weight_nnz is None else weight_nnz  # [in]
    ones = rows.new_ones(1, rows.shape[0])
    nonzeros = int(torch.count_nonzero(rows))
    spikes = False
    # Fast path for {0, 1} spikes: the input is its own nonzero mask, so the column sums
    # (one matrix-vector product, exact in float32 below 2**24 rows) count nonzero inputs.
    if check_spikes and rows.numel():
        lo, hi = torch.aminmax(rows)
        if lo >= 0 and hi <= 1:
            spikes = int(torch.count_nonzero(rows == 1)) == nonzeros
            if spikes:
                nnz_in = (ones @ rows)[0]
        elif lo >= -1 and hi <= 1:
            spikes = is_spike_valued(rows, nonzeros)
            if spikes:
                nnz_in = (ones @ rows.abs())[0]
    if not spikes:
        nnz_in = (ones @ (rows != 0).to(rows.dtype))[0]
    nnz_in = nnz_in.round().long()  # [in]: nonzero inputs per input feature
    return LayerOps(
        synops=int((nnz_in * nnz_w.to(nnz_in.device)).sum()),
        dense=rows.shape[0] * n_in * weight.shape[0],
        spike_input=spikes,
        zeros=rows.numel() - nonzeros,
        values=rows.numel(),
    )


def input_ops(
    x: torch.Tensor | SpikeEvents,
    weight: torch.Tensor,
    check_spikes: bool = True,
    weight_nnz: torch.Tensor | None = None,
) -> LayerOps:
    """:func:`linear_ops` of a layer's whole input over T steps, counted per time step
    whatever form the input takes: a dense ``[T, B, in]`` tensor, a ``[T, B, in]`` view that
    repeats one ``[B, in]`` tensor over T (stride 0: counted once, times T) or
    :class:`SpikeEvents` (binary spikes: ACs)."""
    nnz_w = torch.count_nonzero(weight, dim=0) if weight_nnz is None else weight_nnz  # [in]
    if isinstance(x, SpikeEvents):
        T, B, n_in = x.shape
        values = T * B * n_in
        return LayerOps(
            synops=int((x.input_counts() * nnz_w.to(torch.long).cpu()).sum()),
            dense=T * B * n_in * weight.shape[0],
            spike_input=True,
            zeros=values - x.nnz,
            values=values,
        )
    if x.dim() == 3 and x.shape[0] > 1 and x.stride(0) == 0:
        T = x.shape[0]
        once = linear_ops(x[0], weight, check_spikes, nnz_w)
        return LayerOps(
            once.synops * T, once.dense * T, once.spike_input, once.zeros * T, once.values * T
        )
    return linear_ops(x, weight, check_spikes, nnz_w)


#: Rows per chunk in :func:`linear_ops` (float32 counts of 0/1 values are exact below 2**24).
_MAX_ROWS = 1 << 23


#: Images per chunk in :func:`conv2d_ops` (bounds the memory of the counting convolution).
CONV_CHUNK = 1024


def _conv(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv``'s own convolution (stride, padding and padding mode, dilation, groups) of
    ``x`` with ``weight``, no bias."""
    return conv._conv_forward(x, weight, None)


def conv2d_ops(
    x: torch.Tensor,
    conv: nn.Conv2d,
    check_spikes: bool = True,
    weight_mask: torch.Tensor | None = None,
) -> LayerOps:
    """Synaptic operations of ``conv`` fed ``x`` ``[..., C, H, W]`` (every leading index one
    image): NeuroBench 2.3's rule — the convolution of the nonzero mask of the input with the
    nonzero mask of the weights, bias left out, summed over every output — i.e. the number
    of (nonzero input x nonzero weight) pairs the layer multiplies. ACs when every input value
    is in {-1, 0, 1}, else MACs; ``dense``: the same with all-ones input and weights.
    ``weight_mask``: ``(conv.weight != 0)`` as float, when the caller has it already.
    """
    images = x.reshape(-1, *x.shape[-3:])
    wmask = (conv.weight.detach() != 0).to(torch.float32) if weight_mask is None else weight_mask
    nonzeros = int(torch.count_nonzero(images))
    spikes = check_spikes and is_spike_valued(images, nonzeros)
    synops = 0.0
    for chunk in images.split(CONV_CHUNK):
        counts = _conv(conv, (chunk != 0).to(torch.float32), wmask)  # exact small integers
        synops += float(counts.sum(dtype=torch.float64))
    ones = torch.ones(1, *images.shape[1:], dtype=torch.float32, device=images.device)
    per_image = float(_conv(conv, ones, torch.ones_like(wmask)).sum(dtype=torch.float64))
    return LayerOps(
        synops=int(round(synops)),
        dense=int(round(per_image)) * images.shape[0],
        spike_input=spikes,
        zeros=images.numel() - nonzeros,
        values=images.numel(),
    )
