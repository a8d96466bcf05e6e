"""Tasks: the one interface the orchestrator's trainable calls, whatever the task.

A task is built from a *trial config* — a plain, JSON-serialisable dict (the orchestrator's
resolved cell; sna_core never reads YAML)::

    {
      "seed": 0,
      "dataset": {"name": "redundant_shapes", "task": "classification", "root": None,
                  "image_size": 32, "num_classes": 10, "kwargs": {}},
      "model": {"backbone": "resnet18", "stem": "cifar", "attention": "sna",
                "placement": "stem", "attention_kwargs": {"rank_k": 1}},
      "train": {"epochs": 3, "batch_size": 64, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                "weight_decay": 5e-4, "schedule": {"name": "multistep", "milestones": [2], "gamma": 0.2},
                "metric": "top1", "mode": "max", "loader_workers": 0,
                "limit_train_batches": None, "limit_eval_batches": None},
    }

``build_task(config)`` returns an object with the methods of :class:`Task`.
"""
