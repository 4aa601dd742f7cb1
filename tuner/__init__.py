"""tuner: find the best batching configuration for a Triton model, with measurements."""

__version__ = "0.1.0"
