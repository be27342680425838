"""The heatmap's grid and scale: which module sits in which cell, and the colour scale.

A grid is (layers, kinds, cells): rows are layer indices, columns the module kinds of the
architecture, from a core ModuleTree, from an adapter read by the inspector, or from module
names alone (a run's metrics.jsonl). The colour scale is viridis on log10 of the value, with
1-2-5 bounds and ticks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QImage

MAX_CELL = QSize(110, 34)  # small models: big cells, but not a wall of colour
_LUT = pg.colormap.get("viridis").getLookupTable(nPts=256).astype(np.uint32)
LUT_ARGB = (0xFF000000 | (_LUT[:, 0] << 16) | (_LUT[:, 1] << 8) | _LUT[:, 2]).astype(np.uint32)
_NICE_STEPS = (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000)


@dataclass
class CellInfo:
    """One module shown in the heatmap."""

    name: str
    layer: int | None
    kind: str
    rank: int | None = None  # None: no adapter
    alpha: float | None = None
    params: int | None = None


def grid_from_tree(tree) -> tuple[int, list[str], list[CellInfo]]:
    """(layers, kinds, cells) for every LoRA-capable module of a core ModuleTree."""
    saved = set(tree.head) if tree.task == "sequence-classification" else set()
    cells = [CellInfo(m.name, m.layer, m.kind) for m in tree.modules.values()
             if m.lora and m.name not in saved]
    return tree.num_layers, tree.kinds(), cells


def grid_from_names(names: Iterable[str]) -> tuple[int, list[str], list[CellInfo]]:
    """(layers, kinds, cells) from module names alone (a run's metrics.jsonl, no tree)."""
    from graftlab.core.adapter.info import _layer_and_kinds  # the inspector's own naming rule

    names = list(names)
    where = _layer_and_kinds(names)
    cells = [CellInfo(n, *where[n]) for n in names]
    return _layers_kinds(cells) + (cells,)


# Without the model, kinds are put in the usual order of a block (attention before MLP,
# q/k/v/o, gate/up/down): safetensors files list tensors alphabetically, mlp before self_attn.
_USUAL = ("q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "c_attn", "query", "key",
          "value", "o_proj", "out_proj", "dense", "gate_proj", "up_proj", "gate_up_proj", "w1",
          "w3", "c_fc", "fc1", "down_proj", "w2", "fc2", "c_proj")


def _kind_key(kind: str, full: str, first: int) -> tuple[int, int, int]:
    leaf = kind.rpartition(".")[2]
    attn = 0 if ("attn" in full or "attention" in full) else 1
    return attn, _USUAL.index(leaf) if leaf in _USUAL else len(_USUAL), first


def _layers_kinds(cells: list[CellInfo]) -> tuple[int, list[str]]:
    kinds: dict[str, tuple[int, int, int]] = {}
    for c in cells:
        if c.layer is not None and c.kind not in kinds:
            kinds[c.kind] = _kind_key(c.kind, c.name, len(kinds))
    layers = max((c.layer for c in cells if c.layer is not None), default=-1) + 1
    return layers, sorted(kinds, key=kinds.__getitem__)


def grid_from_adapter(info) -> tuple[int, list[str], list[CellInfo]]:
    """(layers, kinds, cells) for an AdapterInfo: the adapted modules only, kinds in file order."""
    cells = [CellInfo(m.name, m.layer, m.kind, m.rank, m.alpha, m.params) for m in info.modules]
    return _layers_kinds(cells) + (cells,)


_BAR: list[QImage] = []


def colour_bar(size: QSize) -> QImage:
    """The colour bar image (high values on top), built once per size."""
    if not _BAR or _BAR[0].size() != size:
        buf = np.ascontiguousarray(LUT_ARGB[::-1].reshape(256, 1))
        img = QImage(buf.data, 1, 256, 4, QImage.Format.Format_ARGB32).copy()
        _BAR[:] = [img.scaled(size, Qt.AspectRatioMode.IgnoreAspectRatio,
                              Qt.TransformationMode.SmoothTransformation)]
    return _BAR[0]


def nice_log_range(vmin: float, vmax: float) -> tuple[float, float]:
    """log10 bounds snapped outwards to 1-2-5 values (0.1, 0.2, 0.5, 1...), never empty."""
    def snap(v: float, up: bool) -> float:
        e = math.floor(math.log10(v))
        steps = [m * 10.0 ** k for k in (e - 1, e, e + 1) for m in (1, 2, 5)]
        pick = min(x for x in steps if x >= v * (1 - 1e-9)) if up else \
            max(x for x in steps if x <= v * (1 + 1e-9))
        return math.log10(pick)

    lo, hi = snap(vmin, False), snap(vmax, True)
    return (lo, hi) if hi > lo else (lo, lo + math.log10(2))


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 tick values between 10**lo and 10**hi (only decades when it spans many)."""
    mults = (1,) if hi - lo > 3 else (1, 2, 5)
    return [m * 10.0 ** k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in mults
            if lo - 1e-9 <= math.log10(m * 10.0 ** k) <= hi + 1e-9]


def label_step(rows: int, row_h: float, text_h: int) -> int:
    for step in _NICE_STEPS:
        if step * row_h >= text_h * 1.4 or step * 10 >= rows:
            return step
    return _NICE_STEPS[-1]


def format_value(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"
