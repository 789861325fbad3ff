"""Registers the sweeper's config schema (``hydra/sweeper=snnbench``) with Hydra."""

from hydra.core.config_store import ConfigStore

from snnbench.sweeps.settings import SnnbenchSweeperConf

ConfigStore.instance().store(
    group="hydra/sweeper", name="snnbench", node=SnnbenchSweeperConf, provider="snnbench"
)
