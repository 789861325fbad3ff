"""The maths of spiking networks, as pure tensor code: LIF neuron updates and surrogate spikes
(``neurons``), the multi-step recurrences over T (``engine``, with the compiled CPU loops in
``lif_cpu``), the encoders from images to time-first spikes (``encoding``), spike events and the
event kernels of the first layer (``events``), the synaptic-operation counts of a layer
(``synops``, NeuroBench's rule) and dropout masks (``dropout``). Nothing here reads a config, a
file or a run."""
