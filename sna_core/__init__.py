"""sna_core: the model layer of sna-orch (pure PyTorch; knows nothing of Ray, MLflow or YAML).

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022).
"""

__version__ = "0.1.0"
