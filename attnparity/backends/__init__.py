"""Attention backends: the contract (base), the registry, and one module per family."""
