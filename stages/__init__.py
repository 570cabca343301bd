"""The six generic pipeline stages; ``dvc.yaml`` runs each as ``python -m stages.<name>``."""
