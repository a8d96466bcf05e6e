"""The Task interface: what the orchestrator's trainable calls to build, train and evaluate a trial.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022). A task turns one trial config (schema in :mod:`sna_core.tasks`) into a
model (:func:`sna_core.backbones.build_backbone`), datasets (:func:`sna_core.data.build_dataset`),
loaders, an optimiser and schedule, and runs one epoch of training or an evaluation. The caller
owns the epoch loop, devices, distribution and checkpoints::

    task = build_task(config)
    seed_everything(task.seed)
    model = task.build_model().to(device)
    train_set, eval_set = task.build_datasets()
    train_loader = task.build_loader(train_set, train=True)
    eval_loader = task.build_loader(eval_set, train=False)
    optimizer, scheduler = task.build_optimizer(model)
    for epoch in range(task.epochs):
        task.set_epoch(train_loader, epoch)          # reshuffles (also DistributedSampler)
        train_metrics = task.train_one_epoch(model, train_loader, optimizer, device)
        if scheduler is not None:
            scheduler.step()                         # epoch-based schedules
        eval_metrics = task.evaluate(model, eval_loader, device)

Under ``torch.distributed`` (DDP), pass a ``DistributedSampler`` to :meth:`Task.build_loader`;
the metrics of both methods are then summed over ranks, so every rank returns the same numbers.
"""

from __future__ import annotations

import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset, Sampler

from sna_core.data import build_dataset, dataset_info
from sna_core.tasks.config import validate_config
from sna_core.tasks.optim import build_optimizer, build_scheduler


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; raised before the bad step is applied."""

    def __init__(self, loss: float, step: int) -> None:
        self.loss, self.step = loss, step
        super().__init__(
            f"non-finite training loss {loss} at step {step} of the epoch (0-based batch index); "
            "the weights were not updated with it — try a lower learning rate"
        )

    def __reduce__(self) -> tuple[type, tuple[float, int]]:
        # Ray ships exceptions between processes by pickling; the default would call cls(text).
        return type(self), (self.loss, self.step)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (every device). ``deterministic=True`` also asks torch for
    deterministic kernels (warning, not failing, where none exists) and turns off cuDNN autotuning."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch, fixed by ``(seed, epoch)``: an interrupted run that resumes
    at epoch ``e`` sees the same order as one that never stopped. Same ``set_epoch`` protocol as
    :class:`torch.utils.data.DistributedSampler`."""

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


def _seed_worker(worker_id: int) -> None:
    # torch seeds each loader worker from the loader's generator; derive the other RNGs from it.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def _detached(outputs: Any) -> Any:
    """``outputs`` cut from the graph: a tensor, or a dict of them (a detector's loss dict)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, dict):
        return {key: _detached(value) for key, value in outputs.items()}
    return outputs


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def reduce_sums(values: dict[str, float], device: torch.device | str) -> dict[str, float]:
    """Sum ``values`` over ranks (identity without torch.distributed)."""
    if not distributed() or not values:
        return values
    on = torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=on)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return dict(zip(values, tensor.tolist()))


class Task(ABC):
    """One trial's recipe. Subclasses supply the loss, the training counts and the evaluation."""

    name: ClassVar[str]
    # Loader workers kept across epochs (faster); False where the dataset changes per epoch via
    # set_epoch, which persistent workers (copies of the dataset) would not see.
    persistent_workers: ClassVar[bool] = True

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = validate_config(config)
        self.info = dataset_info(self.config["dataset"]["name"])

    # -- the config, as properties the caller needs ------------------------------------------
    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def epochs(self) -> int:
        return self.config["train"]["epochs"]

    @property
    def metric(self) -> str:
        """The evaluation metric to select on (a key of :meth:`evaluate`'s result)."""
        return self.config["train"]["metric"]

    @property
    def mode(self) -> str:
        return self.config["train"]["mode"]

    @property
    def in_channels(self) -> int:
        return int(self.config["dataset"]["kwargs"].get("in_channels", self.info.in_channels))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input, e.g. for FLOP counting."""
        size = self.config["dataset"]["image_size"]
        return (self.in_channels, size, size)

    # -- building ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        # Lazily: the backbones import every attention block.
        from sna_core.backbones import build_backbone

        model = self.config["model"]
        return build_backbone(
            model["backbone"],
            self.config["dataset"]["num_classes"],
            stem=model["stem"],
            attention=model["attention"],
            placement=model["placement"],
            attention_kwargs=model["attention_kwargs"],
            stages=model["stages"],
            in_channels=self.in_channels,
        )

    def dataset_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sna_core.data.build_dataset` for both splits."""
        dataset = self.config["dataset"]
        return {"image_size": dataset["image_size"], **dataset["kwargs"]}

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """(train, eval) datasets: the ``train`` and ``val`` splits."""
        dataset = self.config["dataset"]
        kwargs = self.dataset_kwargs()
        splits = []
        for split in ("train", "val"):
            built = build_dataset(dataset["name"], dataset["root"], split, task=dataset["task"], **kwargs)
            classes = getattr(built, "num_classes", None)
            if classes is not None and classes > dataset["num_classes"]:
                raise ValueError(
                    f"dataset {dataset['name']!r} split {split!r} has {classes} classes but "
                    f"dataset.num_classes is {dataset['num_classes']}: the classifier needs at least {classes} outputs"
                )
            splits.append(built)
        return splits[0], splits[1]

    def build_loader(self, dataset: Dataset, *, train: bool, sampler: Sampler | None = None) -> DataLoader:
        """Batches of ``train.batch_size`` (evaluation: ``train.eval_batch_size`` or the same).

        Training shuffles with an :class:`EpochShuffleSampler` unless ``sampler`` is given (e.g. a
        DistributedSampler), and drops an incomplete last batch (BatchNorm refuses a batch of
        one) when the dataset holds more than one batch.
        """
        train_config = self.config["train"]
        batch_size = train_config["batch_size"] if train else (train_config["eval_batch_size"] or train_config["batch_size"])
        workers = train_config["loader_workers"]
        if train and sampler is None:
            sampler = EpochShuffleSampler(len(dataset), self.seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=train and len(dataset) > batch_size,
            num_workers=workers,
            persistent_workers=workers > 0 and self.persistent_workers,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_seed_worker if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=self.collate_fn(),
        )

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """How the loaders batch items (None: torch's default, stacking equal-shaped tensors)."""
        return None

    @staticmethod
    def set_epoch(loader: DataLoader, epoch: int) -> None:
        """Tell the loader's sampler which epoch starts (reshuffles), and its dataset where it has
        ``set_epoch`` (the detection datasets draw their flips per epoch); no-op without either."""
        for owner in (loader.sampler, loader.dataset):
            set_epoch = getattr(owner, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)

    def build_optimizer(self, model: nn.Module) -> tuple[Optimizer, LRScheduler | None]:
        train = self.config["train"]
        optimizer = build_optimizer(
            (p for p in model.parameters() if p.requires_grad),
            train["optimizer"],
            lr=train["lr"],
            momentum=train["momentum"],
            weight_decay=train["weight_decay"],
            nesterov=train["nesterov"],
            beta2=train["beta2"],
        )
        return optimizer, build_scheduler(optimizer, train["schedule"], epochs=train["epochs"])

    # -- training ---------------------------------------------------------------------------
    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean training loss of a batch."""

    @abstractmethod
    def batch_counts(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Summable per-batch counts for the training metrics (e.g. correct predictions)."""

    @abstractmethod
    def summarise_counts(self, counts: dict[str, float], num_images: float) -> dict[str, float]:
        """Training metrics from the counts summed over an epoch (and over ranks)."""

    def training_forward(
        self, model: nn.Module, inputs: Any, targets: Any, device: torch.device | str
    ) -> tuple[Any, Any, int]:
        """Move one training batch to ``device`` and run ``model`` on it: (outputs, targets on
        ``device``, images in the batch). ``outputs`` is what :meth:`loss` takes."""
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        return model(inputs), targets, inputs.shape[0]

    def train_one_epoch(
        self, model: nn.Module, loader: DataLoader, optimizer: Optimizer, device: torch.device | str
    ) -> dict[str, float]:
        """One pass over ``loader`` (at most ``train.limit_train_batches`` batches).

        Returns ``loss`` (mean over images), the task's training metrics, ``images_per_s``
        (all ranks' images over this rank's wall time, data loading included), ``num_images``,
        ``steps`` and ``lr`` (the first parameter group's, as used in this epoch). Raises
        :class:`NonFiniteLossError` at the first NaN/inf loss, before the update.
        """
        limit = self.config["train"]["limit_train_batches"]
        model.train()
        loss_sum, num_images, steps = 0.0, 0, 0
        counts: dict[str, float] = {}
        lr = float(optimizer.param_groups[0]["lr"])
        start = time.perf_counter()
        for step, (inputs, targets) in enumerate(loader):
            if limit is not None and step >= limit:
                break
            outputs, targets, batch = self.training_forward(model, inputs, targets, device)
            loss = self.loss(outputs, targets)
            loss_value = float(loss.detach())
            if not np.isfinite(loss_value):
                raise NonFiniteLossError(loss_value, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss_value * batch
            num_images += batch
            steps += 1
            for key, value in self.batch_counts(_detached(outputs), targets).items():
                counts[key] = counts.get(key, 0.0) + value
        elapsed = time.perf_counter() - start
        if num_images == 0:
            raise ValueError("the training loader yielded no batch (empty dataset, or batch_size larger than it with drop_last)")
        totals = reduce_sums({"loss_sum": loss_sum, "num_images": float(num_images), **counts}, device)
        total_images = totals.pop("num_images")
        return {
            "loss": totals.pop("loss_sum") / total_images,
            **self.summarise_counts(totals, total_images),
            "images_per_s": total_images / elapsed if elapsed > 0 else float("inf"),
            "num_images": total_images,
            "steps": float(steps),
            "lr": lr,
        }

    @abstractmethod
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device | str) -> dict[str, float]:
        """Metrics of ``model`` on ``loader`` (at most ``train.limit_eval_batches`` batches)."""

    def _eval_batches(self, loader: DataLoader) -> Iterator[tuple[Any, Any]]:
        limit = self.config["train"]["limit_eval_batches"]
        for index, batch in enumerate(loader):
            if limit is not None and index >= limit:
                return
            yield batch
