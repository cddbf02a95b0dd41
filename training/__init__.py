"""Data (synthetic referring videos, real dataset loaders), losses, metrics, training, evaluation."""
