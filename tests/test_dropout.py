"""Dropout of hidden layers: one mask per sample shared over T or one per step, scaled by
1/(1-p), training only, p=0 the model without dropout bit for bit, the same masks in the
fused engine and the step loop, seeded and resumable end to end, bad values named."""

from __future__ import annotations

import json

import pytest
import torch

from snnbench.config import ConfigError, validate
from snnbench.maths import dropout as dropout_mod
from snnbench.maths.dropout import Dropout, StepMasks
from snnbench.maths.neurons import LIFParams
from snnbench.networks.contract import Neuron
from snnbench.networks.conv import ConvANN, ConvSNN
from snnbench.networks.mlp import ANN, SpikingMLP
from snnbench.run.results import CHECKPOINT_FILE, METRICS_FILE
from snnbench.run.training import run

PARAMS = LIFParams(beta=0.8, threshold=0.5)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _drop(p: float, mask: str, seed: int = 0) -> Dropout:
    d = Dropout(p, mask)
    d.generator = _gen(seed)
    return d


def test_sample_mask_is_shared_by_the_t_steps_and_scaled_by_one_over_keep():
    x = torch.ones(7, 64, 50)  # [T, B, N]
    out = _drop(0.5, "sample")(x)
    assert set(out.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1/(1-p)
    assert all(torch.equal(out[t], out[0]) for t in range(7))  # one mask for all T steps
    assert 0.4 < (out[0] > 0).float().mean() < 0.6
    assert not torch.equal(out[0, 0], out[0, 1])  # each sample its own mask


def test_step_mask_is_drawn_afresh_at_every_step():
    out = _drop(0.5, "step")(torch.ones(7, 64, 50))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert all(not torch.equal(out[t], out[0]) for t in range(1, 7))


@pytest.mark.parametrize("mask", ["sample", "step"])
def test_kept_values_are_exactly_x_over_keep_probability(mask):
    x = torch.rand(4, 32, 40, generator=_gen(3)) + 0.5  # no zeros of its own
    p = 0.3
    out = _drop(p, mask)(x)
    kept = out != 0
    assert torch.equal(out[kept], x[kept] * (1.0 / (1.0 - p)))
    assert 0.6 < kept.float().mean() < 0.8


def test_eval_mode_and_p_zero_return_the_input_itself():
    x = torch.rand(3, 4, 5)
    d = _drop(0.5, "sample").eval()
    assert d(x) is x
    assert Dropout(0.0, "step")(x) is x
    ann = Dropout(0.5, time_first=False)
    ann.generator = _gen()
    y = ann(torch.ones(8, 30))  # no time axis: one element per value
    assert not torch.equal(y[0], y[1])


def test_step_masks_equal_the_time_first_masks():
    """A step loop (t outer, layers inner) gets the masks the time-first pass draws."""
    shapes = [(5, 3, 8), (5, 3, 6)]  # two hidden layers, [T, B, N]
    for mask in ("sample", "step"):
        first = _drop(0.5, mask, seed=4)
        expected = [first(torch.ones(s)) for s in shapes]
        masks = StepMasks(_drop(0.5, mask, seed=4), steps=5, hidden_layers=2)
        got = [
            [masks.apply(i, t, torch.ones(s[1:])) for i, s in enumerate(shapes)] for t in range(5)
        ]
        for i in range(2):
            assert torch.equal(torch.stack([got[t][i] for t in range(5)]), expected[i])
        assert masks.apply(2, 0, torch.ones(3, 4)).eq(1).all()  # the output layer: never


def _mlp_pair(p: float, mask: str) -> tuple[SpikingMLP, SpikingMLP]:
    torch.manual_seed(0)
    fused = SpikingMLP([20, 16, 12, 4], PARAMS, dropout=p, dropout_mask=mask)
    ref = SpikingMLP([20, 16, 12, 4], PARAMS, engine="snntorch", dropout=p, dropout_mask=mask)
    with torch.no_grad():
        for fc in fused.fcs:
            fc.weight.mul_(3)  # make every layer spike
    ref.fcs.load_state_dict(fused.fcs.state_dict())
    return fused, ref


def _conv_pair(p: float, mask: str) -> tuple[ConvSNN, ConvSNN]:
    neuron = Neuron("leaky", PARAMS)
    kw = dict(channels=(3, 5), kernel_size=3, pool=2, dropout=p, dropout_mask=mask)
    torch.manual_seed(0)
    fused = ConvSNN((1, 12, 12), 4, neuron, **kw)
    ref = ConvSNN((1, 12, 12), 4, neuron, engine="snntorch", **kw)
    with torch.no_grad():
        for c in fused.convs:
            c.weight.mul_(3)
    ref.convs.load_state_dict(fused.convs.state_dict())
    ref.fc.load_state_dict(fused.fc.state_dict())
    return fused, ref


def _spikes(shape: tuple[int, ...]) -> torch.Tensor:
    return (torch.rand(shape, generator=_gen(1)) < 0.5).float()


@pytest.mark.parametrize("mask", ["sample", "step"])
@pytest.mark.parametrize("pair,shape", [(_mlp_pair, (6, 3, 20)), (_conv_pair, (6, 3, 1, 12, 12))])
def test_fused_engine_and_step_loop_drop_the_same_units(pair, shape, mask):
    fused, ref = pair(0.4, mask)
    outs, grads = [], []
    for model in (fused, ref):
        dropout_mod.set_generator(model, _gen(9))
        out = model(_spikes(shape))
        out.logits.sum().backward()
        outs.append(out)
        grads.append([p.grad for p in model.parameters() if p.grad is not None])
    for s, r in zip(outs[0].spikes, outs[1].spikes):
        assert torch.equal(s, r)
    torch.testing.assert_close(outs[0].logits, outs[1].logits, rtol=1e-5, atol=1e-6)
    for g, h in zip(*grads):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)
    off, _ = pair(0.0, mask)
    assert not torch.equal(outs[0].logits, off(_spikes(shape)).logits)  # it did drop


def test_fused_mlp_feeds_the_next_layer_sample_masked_spikes():
    """In the fused engine the hidden spikes ``[T, B, N]`` reach the next Linear through one
    ``[1, B, N]`` mask (sample) or a ``[T, B, N]`` one (step)."""
    for mask, shared in (("sample", True), ("step", False)):
        model, _ = _mlp_pair(0.5, mask)
        seen = {}
        model.fcs[1].register_forward_hook(lambda m, i, o, seen=seen: seen.update(x=i[0]))
        dropout_mod.set_generator(model, _gen(2))
        out = model(_spikes((8, 16, 20)))
        spk, fed = out.spikes[0], seen["x"].reshape(8, 16, -1)
        assert torch.equal(fed[spk == 0], torch.zeros_like(fed[spk == 0]))
        assert set(fed[spk == 1].unique().tolist()) == {0.0, 2.0}
        dropped = (spk == 1) & (fed == 0)  # units that spiked but were silenced
        kept = (spk == 1) & (fed == 2)
        # sample: a unit silenced at one step is silenced at every step of that sample
        mixed = (dropped.any(0) & kept.any(0)).any()
        assert bool(mixed) is not shared


@pytest.mark.parametrize(
    "make",
    [
        lambda p: ANN([20, 16, 12, 4], dropout=p),
        lambda p: ConvANN((1, 12, 12), 4, channels=(3, 5), kernel_size=3, dropout=p),
        lambda p: SpikingMLP([20, 16, 12, 4], PARAMS, dropout=p, dropout_mask="step"),
        lambda p: ConvSNN((1, 12, 12), 4, Neuron("leaky", PARAMS), channels=(3, 5), kernel_size=3,
                          dropout=p),
    ],
    ids=["ann", "conv_ann", "spiking_mlp", "conv_snn"],
)  # fmt: skip
def test_p_zero_is_the_model_without_dropout_and_eval_ignores_p(make):
    spiking = not isinstance(make(0.0), (ANN, ConvANN))
    x = _spikes((5, 3, 1, 12, 12) if spiking else (3, 1, 12, 12))
    if not isinstance(make(0.0), (ConvANN, ConvSNN)):
        x = x.flatten(-3)[..., :20]

    def logits(model):
        out = model(x)
        return out.logits if spiking else out

    torch.manual_seed(0)
    plain = make(0.0)
    torch.manual_seed(0)
    dropping = make(0.5)
    assert plain.state_dict().keys() == dropping.state_dict().keys()  # checkpoints unchanged
    rng = torch.get_rng_state()
    a = logits(plain)
    assert torch.equal(torch.get_rng_state(), rng)  # p=0 draws nothing
    a.sum().backward()
    assert torch.equal(logits(plain.eval()), a)
    assert torch.equal(logits(dropping.eval()), a)  # evaluation: the whole network, unscaled
    dropout_mod.set_generator(dropping.train(), _gen(5))
    assert not torch.equal(logits(dropping), a)


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.dropout=1.0", "model.dropout=1.0 is not allowed; it must be in [0, 1)"),
        ("model.dropout=-0.1", "model.dropout=-0.1 is not allowed"),
        ("model.dropout_mask=layer", "model.dropout_mask='layer' is not allowed; choose one of "
                                     "sample, step"),
    ],
)  # fmt: skip
def test_bad_dropout_values_name_their_key(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        validate(make_cfg("model=temporal", override))


def test_every_builtin_model_has_the_keys(make_cfg):
    for model in ("ann", "conv_ann", "single_step", "temporal", "conv_snn"):
        m = make_cfg(f"model={model}").model
        assert m.dropout == 0.0
        assert ("dropout_mask" in m) is (model not in ("ann", "conv_ann"))
    with pytest.raises(ConfigError, match="model.dropout_mask"):
        validate(make_cfg("model=ann", "+model.dropout_mask=step"))


def _history(run_dir):
    rec = json.loads((run_dir / METRICS_FILE).read_text())
    return [{k: v for k, v in h.items() if not k.endswith("time_s")} for h in rec["history"]], rec


def test_dropout_run_is_seeded_resumable_and_p_zero_is_todays_run(make_cfg, tmp_path):
    """End to end (temporal SNN, T=3, fused engine): the same seed draws the same masks, a run
    stopped after epoch 1 and resumed ends where an unbroken one does, and ``dropout=0`` is
    the run of a config without the key."""
    base = ("model=temporal", "model.num_steps=3", "encoding=direct", "optimizer.lr=0.002")
    ov = (*base, "trainer.epochs=2", "model.dropout=0.3")

    def stop(epoch, record):
        raise KeyboardInterrupt

    run(make_cfg(*ov, run_dir=tmp_path / "straight"))
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(*ov, run_dir=tmp_path / "resumed"), on_epoch=stop)
    run(make_cfg(*ov, "trainer.resume=true", run_dir=tmp_path / "resumed"))
    run(make_cfg(*ov, "model.dropout_mask=step", run_dir=tmp_path / "step"))
    straight, rec = _history(tmp_path / "straight")
    resumed, rec2 = _history(tmp_path / "resumed")
    assert rec2["resumed_at_epoch"] == 1 and resumed == straight
    assert rec["test_acc"] == rec2["test_acc"]
    assert _history(tmp_path / "step")[0] != straight

    run(make_cfg(*base, "trainer.epochs=2", "model.dropout=0.0", run_dir=tmp_path / "p0"))
    legacy = make_cfg(*base, "trainer.epochs=2", run_dir=tmp_path / "legacy")
    del legacy.model["dropout"], legacy.model["dropout_mask"]  # a config from before the key
    run(legacy)
    assert _history(tmp_path / "p0")[0] == _history(tmp_path / "legacy")[0] != straight
    p0 = torch.load(tmp_path / "p0" / "best_model.pt", weights_only=True)
    old = torch.load(tmp_path / "legacy" / "best_model.pt", weights_only=True)
    assert all(torch.equal(p0[k], old[k]) for k in old)


def test_a_checkpoint_from_before_the_key_resumes_and_a_changed_p_does_not(make_cfg, tmp_path):
    def stop(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(make_cfg("model=ann", "trainer.epochs=2"), on_epoch=stop)
    path = tmp_path / "run" / CHECKPOINT_FILE
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["config"]["model.dropout"]  # written before the models had the key
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match=r"differs in model.dropout\)"):
        run(make_cfg("model=ann", "trainer.epochs=2", "trainer.resume=true", "model.dropout=0.1"))
    run(make_cfg("model=ann", "trainer.epochs=2", "trainer.resume=true"))
    assert _history(tmp_path / "run")[1]["status"] == "completed"
