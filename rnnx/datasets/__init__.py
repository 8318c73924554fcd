"""Datasets: MNIST (original IDX files, optional download)."""
from .mnist import MIRRORS, SHA256, default_data_dir, download_mnist, load_mnist, read_idx

__all__ = ["MIRRORS", "SHA256", "default_data_dir", "download_mnist", "load_mnist", "read_idx"]
