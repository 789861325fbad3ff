"""snnbench: train, sweep and benchmark spiking neural networks against an ANN on MNIST."""

__version__ = "0.1.0"

# the flat module paths of before the layout by concern still import (see _aliases)
from snnbench import _aliases  # noqa: E402

_aliases.install()
