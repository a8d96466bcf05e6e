"""The Train backend of a one-worker trial: a ``TorchTrainer`` with nothing to set up.

``TorchConfig`` (Ray's default backend) creates a gloo/NCCL process group even for one worker,
and the Train controller must import ``ray.train.torch.config`` — and with it torch, ~2
CPU-seconds per trial on a small machine — just to unpickle it. A one-worker trial has no peer
to talk to: the worker loop already runs without a process group (``prepare_model`` does not wrap
a one-worker model in DDP, and the tasks sum over ranks only where one is initialised). Trials with
``num_workers > 1`` keep Ray's ``TorchConfig`` and DDP.

This module must not import torch: it is imported wherever the config is unpickled.

Part of sna-orch, the sweep orchestrator for reproducing Fang et al., "Combating spatial
redundancy with spectral norm attention in convolutional learners", Neurocomputing 511 (2022).
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.train.backend import BackendConfig


@dataclass
class SingleWorkerConfig(BackendConfig):
    """``TorchTrainer(torch_config=...)`` for one worker: Train's no-op ``Backend``."""

    # TorchTrainer fills in a process-group backend where this is empty; none is created here.
    backend: str = "none (one worker)"
