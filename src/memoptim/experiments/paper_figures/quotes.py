"""The paper's statements each artifact is compared with, quoted (Malviya et al., TMLR 2024)."""

from __future__ import annotations

#: artifact (Fig. 10: per panel) -> the paper's statement
PAPER = {
    "fig9": (
        "Figure 9 shows the final sharpness metric for different buffer sizes recorded for "
        "CIFAR10/100 experiments with default hyperparameter setup. It is clear that using a large "
        "buffer size can further reduce the sharpness of the solution in such complex settings. "
        "(Caption: C=5 vs C=20, \"Using larger buffers results in lower sharpness even for "
        "high-dimensional models.\")"
    ),
    "fig10_batch": (
        "In both datasets, we found that the default batch size of 64 performs best in terms of "
        "validation accuracy."
    ),
    "fig10_buffer": (
        "We found that the default buffer size of 5 performs best in terms of validation accuracy "
        "[...] and also observe that smaller buffer size results have a slightly higher standard "
        "deviation."
    ),
    "fig19": (
        "we also monitor the m-sharpness during the training of CIFAR10 (left) and CIFAR100 (right) "
        "with the same learning rate of 0.0001 and fixed hyperparameter setups. We compare the "
        "baseline optimizers with Adam+CM and observe that Adam+CM exhibits lower m-sharpness on "
        "both datasets"
    ),
    "table14": (
        "even when increasing the learning rate decreases the overall sharpness (Figure 20), the "
        "resulting minima is sub-optimal (Table 14: lr 0.01: 93.5±0.3, 0.001: 93.7±0.2, "
        "0.0001: 93.4±0.2 % on CIFAR10; \"The best result was obtained using a learning rate of "
        "0.001.\")"
    ),
}
