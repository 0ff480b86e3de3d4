"""Real datasets for the benchmarks: Fashion-MNIST, the Brown corpus, task streams.

Install them with ``bash scripts/get_data.sh`` (into :func:`data_dir`); every loader verifies the
pinned checksums and, when a dataset is missing, raises :class:`DatasetNotFoundError` whose
message holds the exact install command.
"""

from memoptim.data.brown import BrownCorpus, Vocabulary, load_brown
from memoptim.data.fashion_mnist import FashionMNIST, load_fashion_mnist, stratified_split
from memoptim.data.paths import DatasetChecksumError, DatasetNotFoundError, data_dir
from memoptim.data.streams import StreamTask, learning_accuracy, permuted_stream, split_stream

__all__ = [
    "BrownCorpus",
    "DatasetChecksumError",
    "DatasetNotFoundError",
    "FashionMNIST",
    "StreamTask",
    "Vocabulary",
    "data_dir",
    "learning_accuracy",
    "load_brown",
    "load_fashion_mnist",
    "permuted_stream",
    "split_stream",
    "stratified_split",
]
