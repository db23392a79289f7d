"""Data loading: IDX reader, verified MNIST, and the ``Dataset`` records the stages use."""

from pipeline.data.datasets import Dataset, load_dataset, validate_data_config
from pipeline.data.idx import read_idx
from pipeline.data.mnist import MnistRaw, load_mnist

__all__ = ["Dataset", "MnistRaw", "load_dataset", "load_mnist", "read_idx", "validate_data_config"]
