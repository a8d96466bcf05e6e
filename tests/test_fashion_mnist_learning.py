"""A real learning check: ResNet-18 with SNA after the stem, trained for 40 steps on the real
Fashion-MNIST images (Debian package dataset-fashion-mnist), through the task API the
orchestrator's trainable calls.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022). Measured on this project's 2-core CPU (one thread, seeds 0-3, learning
rates 1e-3 to 3e-3): 75-79 % top-1 on the first 1,000 test images after 5 × 8 batches of 64
(about 12-25 s; 77-79 % at this test's lr 1e-3, seeds 0-2); before training ~10 % (chance). The threshold leaves a margin for other CPUs'
arithmetic and torch versions.
"""

from __future__ import annotations

import os

import pytest
import torch

from sna_core.data.fashion_mnist import DEFAULT_ROOT
from sna_core.tasks import build_task, seed_everything

pytestmark = pytest.mark.skipif(
    not os.path.isdir(DEFAULT_ROOT),
    reason=f"needs the real Fashion-MNIST idx files of Debian's dataset-fashion-mnist ({DEFAULT_ROOT}): apt-get install dataset-fashion-mnist",
)

MIN_TOP1_AFTER = 70.0  # percent, measured 75-79
MAX_TOP1_BEFORE = 30.0  # an untrained network is near chance (10 %)


def test_resnet18_with_sna_learns_real_fashion_mnist(one_cpu_thread):
    config = {
        "seed": 0,
        # The ImageNet stem (4× downsampling) keeps a 32² step cheap; no augmentation for 40 steps.
        "dataset": {"name": "fashion_mnist", "image_size": 32, "kwargs": {"transform": "none"}},
        "model": {"backbone": "resnet18", "stem": "imagenet", "attention": "sna", "placement": "stem"},
        "train": {
            "epochs": 5, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
            "schedule": "cosine", "limit_train_batches": 8, "eval_batch_size": 250, "limit_eval_batches": 4,
        },
    }
    task = build_task(config)
    seed_everything(task.seed)
    model = task.build_model()
    train_set, test_set = task.build_datasets()
    assert (len(train_set), len(test_set)) == (60000, 10000)
    train_loader = task.build_loader(train_set, train=True)
    test_loader = task.build_loader(test_set, train=False)
    optimizer, scheduler = task.build_optimizer(model)

    before = task.evaluate(model, test_loader, "cpu")
    for epoch in range(task.epochs):
        task.set_epoch(train_loader, epoch)
        task.train_one_epoch(model, train_loader, optimizer, "cpu")
        scheduler.step()
    after = task.evaluate(model, test_loader, "cpu")

    assert before["num_images"] == after["num_images"] == 1000
    assert before["top1"] < MAX_TOP1_BEFORE
    assert after["top1"] >= MIN_TOP1_AFTER, f"top-1 {after['top1']:.1f} % after 40 steps (measured 75-79 %)"
    assert after["loss"] < before["loss"]
    assert torch.isfinite(torch.tensor(after["loss"]))
