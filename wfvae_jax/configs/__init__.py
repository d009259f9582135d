"""The packaged training configs, by name: ``wfvae train --config NAME`` (or ``NAME:ARG``).

:data:`NAMES`: ``stage1``, ``stage2``, ``stage3`` (the paper's three stages), ``lc_vae`` (LC-VAE
latent compression), ``cpu_small`` (the end-to-end check on a CPU), ``demo`` (the demo model) and
``default`` (the defaults the others start from). Each module's docstring gives its command, its
expected result and where its values come from (its first line is its summary in ``wfvae train
--help``); ``default.py`` describes every field in a trailing comment, which :func:`field_docs`
reads for ``--help``. The configs read no files: data paths (``data.train_dir``, ``eval.files``)
come from the command line. The repository's top-level ``configs/*.py`` are these same configs
for ``python train.py --config configs/NAME.py``.
"""

from __future__ import annotations

import ast
import functools
import os
import tokenize
from collections.abc import Iterator, Mapping
from typing import Any

NAMES = ("stage1", "stage2", "stage3", "lc_vae", "cpu_small", "demo", "default")
# Subtrees whose keys are free (any WFVAEConfig field), not fixed by default.py.
FREE_FIELDS = ("model.overrides",)


def config_path(name: str) -> str:
    """The file of packaged config ``name`` (one of :data:`NAMES`).

    Raises:
      KeyError: ``name`` is not a packaged config.
    """
    if name not in NAMES:
        raise KeyError(name)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")


def summary(name: str) -> str:
    """The first line of packaged config ``name``'s docstring."""
    with open(config_path(name), encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted field name, value)`` of every leaf of a config dict (``config.to_dict()``); the
    :data:`FREE_FIELDS` subtrees count as one leaf each."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in FREE_FIELDS:
            yield from leaves(value, name + ".")
        else:
            yield name, value


@functools.cache
def field_docs() -> dict[str, str]:
    """Field name -> its one-line meaning, in the order of ``default.py``: the trailing comment
    of the field's assignment there (``c.data.num_frames = 25  # frames per training clip``)."""
    path = config_path("default")
    comments: dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for tok in tokenize.generate_tokens(f.readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    docs = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        parts, target = [], node.targets[0]
        while isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        if isinstance(target, ast.Name) and target.id == "c" and parts:
            line = node.end_lineno or node.lineno
            if line in comments:
                docs.append((line, ".".join(reversed(parts)), comments[line]))
    return {name: text for _, name, text in sorted(docs)}
