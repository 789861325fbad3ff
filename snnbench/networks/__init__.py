"""Models and what they are built from: the model contract (what the harness gives a model and
expects back, ``build_model``), snnbench's LIF layer, the built-in MLPs (``mlp``) and
convolutional networks (``conv``), and the forward hooks that count any model's synaptic
operations and spikes (``hooks``). A user's model meets ``contract`` and may use ``layers``; the
YAMLs name these classes by ``_target_``."""
