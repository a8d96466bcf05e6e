"""sna-orch: YAML experiment matrix → validated plan → Ray Tune trials (each a Ray Train
TorchTrainer) → one MLflow run per trial → parquet results."""

__version__ = "0.1.0"
