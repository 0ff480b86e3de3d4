"""The paper's published numbers (Malviya et al., TMLR 2024, section 5) and its grid (Table 8),
to print beside ours.  Values are ``(mean, std)`` over the paper's five seeds.
"""

from __future__ import annotations

from memoptim.registry import REGISTRY

#: Table 2: best validation perplexity (PTB, lower is better) and accuracy % (the others).
TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "adam": {"PTB": (179.4, 2.8), "CIFAR10": (93.9, 0.3), "CIFAR100": (70.7, 0.3),
             "ImageNet": (67.8, 0.1)},
    "adam+cg": {"PTB": (174.4, 5.5), "CIFAR10": (93.8, 0.4), "CIFAR100": (71.0, 0.3),
                "ImageNet": (69.7, 0.1)},
    "adam+sam": {"PTB": (168.7, 1.9), "CIFAR10": (93.7, 0.3), "CIFAR100": (70.5, 0.4),
                 "ImageNet": (65.4, 0.2)},
    "adam+cm": {"PTB": (163.2, 5.5), "CIFAR10": (94.0, 0.3), "CIFAR100": (71.2, 0.3),
                "ImageNet": (71.7, 0.2)},
    "adam+sam+cm": {"PTB": (176.2, 5.7), "CIFAR10": (94.4, 0.4), "CIFAR100": (69.7, 0.3),
                    "ImageNet": (71.3, 0.2)},
}  # fmt: skip

#: Table 3: best validation accuracy % and speed-up (epochs to SGD's accuracy, first 50 epochs).
TABLE3: dict[str, dict[str, tuple[float, float] | float]] = {
    "sgd": {"CIFAR10": (93.0, 0.4), "CIFAR10 speed-up": 1.0,
            "CIFAR100": (69.6, 0.7), "CIFAR100 speed-up": 1.0},
    "sgd+cg": {"CIFAR10": (93.1, 0.4), "CIFAR10 speed-up": 1.2,
               "CIFAR100": (69.6, 0.3), "CIFAR100 speed-up": 1.2},
    "sgd+cm": {"CIFAR10": (93.1, 0.1), "CIFAR10 speed-up": 1.3,
               "CIFAR100": (69.6, 0.7), "CIFAR100 speed-up": 1.2},
}  # fmt: skip

#: Table 4: best learning accuracy % on the online-learning benchmarks.
TABLE4: dict[str, dict[str, tuple[float, float]]] = {
    "adam": {"TinyImagenet": (62.9, 0.4), "5-dataset": (88.2, 0.5)},
    "adam+cg": {"TinyImagenet": (62.8, 0.1), "5-dataset": (88.2, 0.5)},
    "adam+sam": {"TinyImagenet": (62.8, 0.4), "5-dataset": (88.3, 1.0)},
    "adam+cm": {"TinyImagenet": (63.4, 0.1), "5-dataset": (88.4, 0.6)},
    "adam+sam+cm": {"TinyImagenet": (63.9, 0.7), "5-dataset": (88.5, 0.5)},
}

#: Table 8: the hyperparameter grid (flat names of memoptim.experiments.train.HYPERPARAMETERS).
TABLE8: dict[str, list[float]] = {
    "lr": [0.1, 0.01, 0.001, 0.0001],
    "beta1": [0.9, 0.99, 0.999],
    "beta2": [0.99, 0.999, 0.9999],
    "buffer_size": [5, 20],
    "decay": [0.7, 0.99],
    "rho": [0.01, 0.05, 0.1],
}

#: which Table-8 hyperparameters each optimizer's search covers (appendix A.2.2 list; the SGD
#: family, AdaMomentum, AdamW (the transformer task's baseline), the ablations and Lion are not in
#: that list: their natural analogues), from the registry
TABLE8_PARAMS: dict[str, tuple[str, ...]] = {name: entry.searched for name, entry in REGISTRY.items()}

#: the paper's stand-in mapping: our task -> the paper's benchmark columns it stands in for
ANALOGUES: dict[str, tuple[str, ...]] = {
    "brown-lm": ("PTB",),
    "fashion-mnist": ("CIFAR10", "CIFAR100"),
    "split-fashion-mnist": ("TinyImagenet", "5-dataset"),
    "permuted-fashion-mnist": ("TinyImagenet", "5-dataset"),
}
