"""The six generic pipeline stages; ``dvc.yaml`` runs each as ``python -m stages.<name>``.

Importing the package caps the numeric libraries' instruction sets before any of them loads, so
every stage computes the same bits on any x86-64 machine (see :mod:`curriculum.numerics`).
"""
from curriculum.numerics import cap_kernels

cap_kernels()
