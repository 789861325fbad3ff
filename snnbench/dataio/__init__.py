"""Data in: MNIST/Fashion-MNIST IDX files read into memory and split (``data``), dataset objects
named by ``_target_`` (``datasets``), training-batch augmentation (``augment``), event-camera
data binned into frames (``neuromorphic``, N-MNIST) and the batches turned into a model's input,
encoded over time for spiking models (``inputs``)."""
