"""What a trained model is measured by: accuracy on a split with a seeded encoder (``evaluation``)
and the spiking metrics of ``metrics.json`` (``metrics``: firing rates, sparsity, synaptic
operations, energy, the accuracy-latency curve)."""
