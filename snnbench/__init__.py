"""snnbench: train, sweep and benchmark spiking neural networks against an ANN on MNIST."""

__version__ = "0.1.0"
