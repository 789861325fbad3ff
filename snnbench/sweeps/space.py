"""The Optuna search space, written in Hydra's override grammar, and sampled values back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from snnbench.sweeps.settings import SweepConfigError

if TYPE_CHECKING:  # pragma: no cover
    from optuna.distributions import BaseDistribution


def search_space(params: Mapping[str, Any]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Parse ``hydra.sweeper.params`` (Hydra override grammar) into Optuna distributions.

    ``interval(a, b)`` -> float in [a, b] (``int(interval(a, b))`` -> int);
    ``tag(log, interval(a, b))`` -> log scale; ``range(a, b, step=s)`` -> the values Hydra's
    range yields (stop excluded); ``choice(...)`` -> categorical; a plain value is fixed.
    Returns ``(distributions, fixed_overrides)``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    parser = OverridesParser.create()
    dists: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for key, raw in params.items():
        text = f"{key}={raw}"
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as exc:
            raise SweepConfigError(
                f"hydra.sweeper.params.{key}={raw!r} cannot be parsed: {exc}".splitlines()[0]
            ) from None
        name = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(f"{name}={override.get_value_element_as_str()}")
            continue
        value = override.value()
        if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
            choices = list(override.sweep_iterator())
            if not choices:
                raise SweepConfigError(f"hydra.sweeper.params.{key}={raw!r} has no choices")
            dists[name] = CategoricalDistribution(choices)
        elif isinstance(value, RangeSweep):
            start, stop, step = value.start, value.stop, value.step
            values = list(override.sweep_iterator())
            if not values:
                raise SweepConfigError(
                    f"hydra.sweeper.params.{key}={raw!r} is empty (range excludes its stop)"
                )
            if all(isinstance(v, int) for v in (start, stop, step)):
                dists[name] = IntDistribution(int(values[0]), int(values[-1]), step=int(step))
            else:
                dists[name] = FloatDistribution(
                    float(values[0]), float(values[-1]), step=float(step)
                )
        elif isinstance(value, IntervalSweep):
            log = "log" in value.tags
            lo, hi = value.start, value.end
            if lo is None or hi is None or not lo < hi or (log and lo <= 0):
                raise SweepConfigError(
                    f"hydra.sweeper.params.{key}={raw!r} is not allowed; it needs start < end"
                    + (" and start > 0 (log scale)" if log else "")
                )
            if isinstance(lo, int) and isinstance(hi, int):
                dists[name] = IntDistribution(lo, hi, log=log)
            else:
                dists[name] = FloatDistribution(float(lo), float(hi), log=log)
        else:  # pragma: no cover - Hydra has no other sweep types
            raise SweepConfigError(f"hydra.sweeper.params.{key}={raw!r}: unsupported sweep")
    return dists, fixed


def override_value(value: Any) -> str:
    """A sampled value written in Hydra's override grammar (strings quoted when needed)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][\w./-]*", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
