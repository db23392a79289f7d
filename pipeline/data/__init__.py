"""Data loading: IDX reader, IDX data sets declared in conf/data/, and the ``Dataset`` records the
stages use."""

from pipeline.data.datasets import Dataset, class_names, load_dataset, validate_data_config
from pipeline.data.idx import read_idx
from pipeline.data.idxsets import IdxRaw, IdxSpec, load_idx_set, load_mnist

__all__ = [
    "Dataset",
    "IdxRaw",
    "IdxSpec",
    "class_names",
    "load_dataset",
    "load_idx_set",
    "load_mnist",
    "read_idx",
    "validate_data_config",
]
