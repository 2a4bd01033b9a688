"""Datasets for knowledge factorization: loaders that all return an :class:`ArrayDataset`.

Built in: procedural dSprites (:mod:`kf_core.data.dsprites`, no download), scikit-learn's 8x8 digits and its
breast-cancer table (vectors); bring your own as an ``.npz`` file (inputs of any rank), a CSV or Parquet table
(vectors) or a folder of images with one subfolder per class. A :class:`DataSpec`
names any of them, with its subset and train/test split, reproducibly.
"""

from __future__ import annotations

from kf_core.data import dsprites
from kf_core.data.base import ArrayDataset, Split, split_dataset
from kf_core.data.breast_cancer import load_breast_cancer
from kf_core.data.digits import load_digits
from kf_core.data.dsprites import load_dsprites
from kf_core.data.folder import load_image_folder
from kf_core.data.npz import load_npz, save_npz
from kf_core.data.spec import DataSpec, load_dataset, load_split
from kf_core.data.table import load_table

__all__ = [
    "ArrayDataset",
    "DataSpec",
    "Split",
    "dsprites",
    "load_breast_cancer",
    "load_dataset",
    "load_digits",
    "load_dsprites",
    "load_image_folder",
    "load_npz",
    "load_split",
    "load_table",
    "save_npz",
    "split_dataset",
]
