"""What the regularisation knobs cost: ``python -m snnbench.bench_augment [--steps T]
[--batch-size B]``.

Prints, for each ``augment`` preset, the time to augment one training batch as a share of one
training step (forward, backward, Adam) of the temporal SNN at T steps, and the same share
for the dropout of one step at ``model.dropout=0.2`` (each ``dropout_mask``: the hidden
layers' masks drawn from a per-batch generator, applied, backpropagated) — all measured in
this process, interleaved, so the ratios hold on a busy machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from snnbench.dataio.augment import Augment, batch_generator
from snnbench.maths import dropout

PRESETS = {
    "shift": Augment(shift=1),
    "affine": Augment(shift=1, rotate=8.0, scale=0.08, shear=5.0),
}


def _seconds(fn: Callable[[], object], n: int) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snnbench.bench_augment", description=__doc__)
    p.add_argument("--steps", type=int, default=5, help="T of the temporal SNN (default 5)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from hydra import compose, initialize_config_dir

    from snnbench.config import config_dir, register_configs
    from snnbench.dataio.inputs import Batcher
    from snnbench.measure.evaluation import logits_of
    from snnbench.networks.contract import build_model

    torch.set_num_threads(args.threads)
    register_configs()
    overrides = ["model=temporal", f"model.num_steps={args.steps}", "trainer.device=cpu"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "run_dir=."])
    batcher = Batcher(cfg)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch_size, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen)

    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step() -> None:
        loss = F.cross_entropy(logits_of(model, batcher(x, gen)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    hidden = [torch.rand(args.steps, args.batch_size, int(n), requires_grad=True)
              for n in cfg.model.hidden]  # fmt: skip

    def dropping(mask: str) -> Callable[[], None]:
        """The dropout of one training step (p=0.2): masks drawn, applied, backpropagated."""
        layer = dropout.Dropout(0.2, mask)

        def fn() -> None:
            layer.generator = dropout.batch_generator(0, 1, 3, x.device)
            sum(layer(h).sum() for h in hidden).backward()

        return fn

    print(f"T={args.steps}, B={args.batch_size}, {args.threads} thread(s)")
    for _ in range(args.repeats):
        step_s = _seconds(step, 20)
        shares = []
        for name, aug in PRESETS.items():
            aug_s = _seconds(lambda a=aug: a(x, batch_generator(0, 1, 3)), 50)
            shares.append(f"{name} {aug_s * 1e3:.2f} ms = {aug_s / step_s:.1%} of a step")
        for mask in dropout.DROPOUT_MASKS:
            drop_s = _seconds(dropping(mask), 50)
            shares.append(f"dropout 0.2 ({mask} masks) {drop_s * 1e3:.2f} ms = "
                          f"{drop_s / step_s:.1%}")  # fmt: skip
        load = os.getloadavg()[0]
        print(f"  step {step_s * 1e3:.1f} ms; " + "; ".join(shares) + f" (load {load:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
