"""A study plan, declared in YAML (``conf/study/<name>.yaml``): its parts and the items each
part runs, in fixed folders under the study's root.

A plan file::

    name: published          # a label recorded in the study's logs
    root: docs/results       # where runs go (``--root`` overrides it)
    epochs: 10               # trainer.epochs of every run (a run entry may say otherwise)
    common: []               # overrides added to every run and search
    parts:                   # run in this order; ``--parts`` picks some
      reproduction:
        seeds: [0, 1, 2]     # each run entry runs once per seed, in <path>/seed<s>
        runs:
          - {tag: study, path: reproduction/ann, overrides: [model=ann]}
      search_ann:            # one Optuna search (a hparams_search preset) into <path>
        search: {tag: search_ann, path: search/ann, preset: study_ann, trials: 20}
      tuned:                 # runs that take a search's best params (``recipe``: its part)
        seeds: [0, 1, 2]
        runs:
          - {tag: tuned_ann, path: tuned/ann, recipe: search_ann, overrides: [model=ann]}
      t_sweep:               # the runs at every value of one key: <path>/<label><v>/seed<s>,
        seeds: [0, 1, 2]     # the first seed at every value first, then the other seeds
        sweep: {key: model.num_steps, label: T, values: [1, 2, 5]}
        runs:
          - {tag: t_sweep, path: t_sweep, recipe: search_temporal, overrides: [model=temporal]}

A run's overrides, in order: the entry's, its recipe's best params (minus a swept key), the
swept value, ``trainer.epochs``, ``trainer.seed``, then ``common``. A user's own study is such
a file in their config directory (``--config-dir``) or anywhere (``--plan FILE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snnbench.config import ConfigError

#: Part names a plan may not use: the report (run last) and the runner's own log files.
RESERVED_PARTS = ("report", "best", "sessions", "locks")


@dataclass(frozen=True)
class RunSpec:
    """One training run: its part (``tag``), folder under the root and overrides."""

    tag: str
    path: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class SearchSpec:
    """One Optuna search: a ``hparams_search`` preset run into a fixed sweep folder."""

    tag: str
    path: str
    preset: str
    n_trials: int
    overrides: tuple[str, ...]
    study_name: str = ""

    @property
    def study(self) -> str:
        """The Optuna study's name (the preset's, unless the plan names another)."""
        return self.study_name or self.preset


Item = RunSpec | SearchSpec


@dataclass(frozen=True)
class RunGroup:
    """A ``runs`` entry: one run per seed (and per swept value)."""

    tag: str
    path: str
    overrides: tuple[str, ...] = ()
    recipe: str | None = None  # the search part whose best params it takes
    epochs: int | None = None  # None: the plan's


@dataclass(frozen=True)
class Sweep:
    """A part's ``sweep``: the runs at each value of ``key``, in ``<path>/<label><v>``."""

    key: str
    label: str
    values: tuple[Any, ...]
    one_seed_from: Any = None  # from this value on, only the first seed (None: every seed)


@dataclass(frozen=True)
class Part:
    """A part of the plan: a search, or runs (per seed, perhaps per swept value)."""

    name: str
    seeds: tuple[int, ...] = (0,)
    runs: tuple[RunGroup, ...] = ()
    search: SearchSpec | None = None
    sweep: Sweep | None = None

    @property
    def recipes(self) -> tuple[str, ...]:
        """The search parts whose best params this part's runs need."""
        return tuple(dict.fromkeys(g.recipe for g in self.runs if g.recipe))


@dataclass(frozen=True)
class StudyPlan:
    """A whole plan (see the module docstring)."""

    name: str
    root: str
    epochs: int
    common: tuple[str, ...]
    parts: tuple[Part, ...]

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)

    def part(self, name: str) -> Part:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(name)

    def tags(self, name: str) -> tuple[str, ...]:
        """The run tags (the analysis's ``part``) of the items of part ``name``."""
        part = self.part(name)
        if part.search is not None:
            return (part.search.tag,)
        return tuple(dict.fromkeys(g.tag for g in part.runs))


# ------------------------------------------------------------------------------ items


def part_items(part: Part, plan: StudyPlan, recipes: dict[str, list[str]]) -> list[Item]:
    """The items of ``part``; ``recipes`` maps a search part's name to its best params (a
    run whose recipe is missing is left out: its search has not given one yet)."""
    if part.search is not None:
        s = part.search
        return [SearchSpec(s.tag, s.path, s.preset, s.n_trials, (*s.overrides, *plan.common),
                           s.study_name)]  # fmt: skip
    items: list[Item] = []
    for group in part.runs:
        if group.recipe is not None and group.recipe not in recipes:
            continue
        best = list(recipes.get(group.recipe, [])) if group.recipe else []
        epochs = f"trainer.epochs={group.epochs or plan.epochs}"
        for label, value_override, seed in _points(part):
            recipe = [o for o in best if not (part.sweep and o.startswith(f"{part.sweep.key}="))]
            overrides = (*group.overrides, *recipe, *value_override, epochs,
                         f"trainer.seed={seed}", *plan.common)  # fmt: skip
            items.append(RunSpec(group.tag, f"{group.path}{label}/seed{seed}", overrides))
    return items


def _points(part: Part) -> list[tuple[str, tuple[str, ...], int]]:
    """(folder suffix, swept override, seed) of each run of a group, in running order."""
    if part.sweep is None:
        return [("", (), s) for s in part.seeds]
    sw = part.sweep
    first, *others = part.seeds
    order = [(first, v) for v in sw.values] + [
        (s, v) for v in sw.values if sw.one_seed_from is None or v < sw.one_seed_from
        for s in others
    ]  # fmt: skip
    return [(f"/{sw.label}{v}", (f"{sw.key}={v}",), s) for s, v in order]


# ----------------------------------------------------------------------------- loading


def plan_file(plan: str, config_dirs: Sequence[Path | str] = ()) -> Path:
    """The YAML of ``plan``: a file path, or ``study/<plan>.yaml`` in the given config dirs
    (first match) and then in snnbench's own."""
    from snnbench.config import config_dir

    as_path = Path(plan)
    if as_path.suffix in (".yaml", ".yml"):
        if as_path.is_file():
            return as_path
        raise ConfigError(f"--plan {plan}: no such file")
    dirs = [*(Path(d) for d in config_dirs), Path(config_dir())]
    for d in dirs:
        candidate = d / "study" / f"{plan}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in dirs for p in (d / "study").glob("*.yaml")})
    raise ConfigError(
        f"--plan {plan}: no study/{plan}.yaml in {', '.join(str(d) for d in dirs)}; "
        f"known plans: {', '.join(known) or 'none'}"
    )


def load_plan(plan: str, config_dirs: Sequence[Path | str] = ()) -> StudyPlan:
    """Read and check a plan (one-line :class:`ConfigError` naming the file and key)."""
    from omegaconf import OmegaConf

    path = plan_file(plan, config_dirs)
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable YAML plan ({exc})") from None
    return parse_plan(raw, str(path))


def parse_plan(raw: Any, where: str) -> StudyPlan:
    """A :class:`StudyPlan` from a plan's parsed YAML."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a plan is a mapping with name, root, epochs, parts")
    _keys(raw, {"name", "root", "epochs", "common", "parts"}, where, "")
    parts_raw = raw.get("parts")
    if not isinstance(parts_raw, dict) or not parts_raw:
        raise ConfigError(f"{where}: 'parts' must map part names to parts")
    epochs = raw.get("epochs", 10)
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"{where}: epochs={epochs!r} must be an integer >= 1")
    for reserved in RESERVED_PARTS:
        if reserved in parts_raw:
            raise ConfigError(f"{where}: parts.{reserved}: '{reserved}' is a reserved part name")
    parts = tuple(_part(name, spec, where) for name, spec in parts_raw.items())
    searches = {p.name for p in parts if p.search is not None}
    for p in parts:
        for recipe in p.recipes:
            if recipe not in searches:
                raise ConfigError(
                    f"{where}: parts.{p.name}: recipe {recipe!r} is not a search part of the "
                    f"plan (its searches: {', '.join(sorted(searches)) or 'none'})"
                )
    paths = [i.path for p in parts for i in part_items(p, _probe(parts), _all_recipes(parts))]
    dup = sorted({x for x in paths if paths.count(x) > 1})
    if dup:
        raise ConfigError(f"{where}: two items share the folder {dup[0]}")
    return StudyPlan(
        name=str(raw.get("name") or Path(where).stem),
        root=str(raw.get("root") or "outputs/study"),
        epochs=epochs,
        common=_strings(raw.get("common", []), where, "common"),
        parts=parts,
    )


def _probe(parts: tuple[Part, ...]) -> StudyPlan:
    return StudyPlan("probe", ".", 1, (), parts)


def _all_recipes(parts: tuple[Part, ...]) -> dict[str, list[str]]:
    return {p.name: [] for p in parts if p.search is not None}


def _part(name: str, spec: Any, where: str) -> Part:
    key = f"parts.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {key} must be a mapping (runs or search)")
    _keys(spec, {"seeds", "runs", "search", "sweep"}, where, key)
    if ("search" in spec) == ("runs" in spec):
        raise ConfigError(f"{where}: {key} needs exactly one of 'runs' or 'search'")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{where}: {key}.seeds={seeds!r} must be a non-empty list of integers")
    if "search" in spec:
        s = spec["search"]
        if not isinstance(s, dict):
            raise ConfigError(f"{where}: {key}.search must be a mapping")
        _keys(s, {"tag", "path", "preset", "trials", "overrides", "study_name"}, where,
              f"{key}.search")  # fmt: skip
        for required in ("path", "preset", "trials"):
            if required not in s:
                raise ConfigError(f"{where}: {key}.search needs '{required}'")
        if not isinstance(s["trials"], int) or s["trials"] < 1:
            raise ConfigError(f"{where}: {key}.search.trials must be an integer >= 1")
        search = SearchSpec(
            tag=str(s.get("tag", name)),
            path=str(s["path"]),
            preset=str(s["preset"]),
            n_trials=s["trials"],
            overrides=_strings(s.get("overrides", []), where, f"{key}.search.overrides"),
            study_name=str(s.get("study_name") or ""),
        )
        return Part(name, tuple(seeds), search=search)
    runs = spec["runs"]
    if not isinstance(runs, list) or not runs:
        raise ConfigError(f"{where}: {key}.runs must be a non-empty list of run entries")
    groups = []
    for k, r in enumerate(runs):
        rkey = f"{key}.runs[{k}]"
        if not isinstance(r, dict) or "path" not in r:
            raise ConfigError(f"{where}: {rkey} must be a mapping with at least 'path'")
        _keys(r, {"tag", "path", "overrides", "recipe", "epochs"}, where, rkey)
        groups.append(
            RunGroup(
                tag=str(r.get("tag", name)),
                path=str(r["path"]),
                overrides=_strings(r.get("overrides", []), where, f"{rkey}.overrides"),
                recipe=r.get("recipe"),
                epochs=r.get("epochs"),
            )
        )
    sweep = None
    if "sweep" in spec:
        w = spec["sweep"]
        if not isinstance(w, dict) or not {"key", "values"} <= set(w):
            raise ConfigError(f"{where}: {key}.sweep needs 'key' and 'values'")
        _keys(w, {"key", "label", "values", "one_seed_from"}, where, f"{key}.sweep")
        if not isinstance(w["values"], list) or not w["values"]:
            raise ConfigError(f"{where}: {key}.sweep.values must be a non-empty list")
        sweep = Sweep(str(w["key"]), str(w.get("label", w["key"].split(".")[-1])),
                      tuple(w["values"]), w.get("one_seed_from"))  # fmt: skip
    return Part(name, tuple(seeds), runs=tuple(groups), sweep=sweep)


def _keys(spec: dict, allowed: set[str], where: str, key: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        at = f"{key}.{unknown[0]}" if key else unknown[0]
        raise ConfigError(f"{where}: {at} is not a key here; allowed: {', '.join(sorted(allowed))}")


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of overrides (strings)")
    return tuple(value)
