"""Per-frame feature arrays as named table columns: the DataFrames of ``avpipe.extract`` and the files
of ``avpipe extract-file`` / ``avpipe export`` (docs/API.md).

One row per timeline frame. Columns: ``time`` (s, container clock), ``frame_index``, ``mask``
(``MaskValue`` codes), then every stored array flattened to one column per value, in C order:

- names the extractor gives (``Extractor.column_names``: the faces' ``box_x1`` ..), else
- names its attributes carry: ``feature_names`` for ``features`` (eGeMAPS, MFCC), ``<array>_names``
  or ``<singular>_names`` for other arrays (``functional_names``, ``logit_names``); the ``labels``
  shard: ``valence``, ``arousal``, AU names, ``<task>.<class>``, ``<dimension>@<rater>``; else
- numbered names: ``<extractor>_<i>`` for ``features`` (``logmel_0`` ..), ``<array>_<i>`` (or
  ``<array>_<i>_<j>`` ..) for others; an array of one value per frame (T,) is the column ``<array>``
  (``<extractor>`` for ``features``).

Arrays with three or more dimensions per row (images: the faces' ``crops_<size>``) are not table
columns; ``ExtractedFeatures.arrays`` and the ``.npz`` files hold them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from avpipe.pipeline.errors import AvpipeError
from avpipe.pipeline.types import FeatureSet

if TYPE_CHECKING:
    import pandas as pd

    from avpipe.pipeline.registry import Extractor

log = logging.getLogger(__name__)

TIMELINE_COLUMNS = ("time", "frame_index", "mask")
LABELS = "labels"
MAX_TABLE_ROW_DIMS = 2  # arrays with more dimensions per row are images: kept out of tables


class TableError(AvpipeError):
    """Feature arrays that cannot become one table (clashing column names, other timelines)."""


def is_table_array(array: np.ndarray) -> bool:
    """Whether ``array`` (T, ...) becomes table columns (images, 3+ dimensions per row, do not)."""
    return array.ndim - 1 <= MAX_TABLE_ROW_DIMS


def column_names(
    extractor: str,
    array: str,
    row_shape: tuple[int, ...],
    attrs: Mapping[str, Any],
    extractor_class: type[Extractor] | None = None,
) -> list[str]:
    """The column names of one array whose rows have ``row_shape`` (module docstring for the rule)."""
    width = math.prod(row_shape)
    named = extractor_class.column_names(array, row_shape, attrs) if extractor_class is not None else None
    if named is None and extractor == LABELS:
        named = label_column_names(array, row_shape, attrs)
    if named is None:
        named = _names_from_attrs(array, attrs)
    if named is not None and len(named) == width:
        return [str(name) for name in named]
    if named is not None:
        log.warning(
            "%s: %d names for the %d values of array %r: numbered columns instead",
            extractor,
            len(named),
            width,
            array,
        )
    prefix = extractor if array == "features" else array
    if row_shape == ():
        return [prefix]
    return [f"{prefix}_{'_'.join(map(str, index))}" for index in np.ndindex(*row_shape)]


def _names_from_attrs(array: str, attrs: Mapping[str, Any]) -> Sequence[Any] | None:
    singular = array.removesuffix("s")
    keys = ["feature_names"] if array == "features" else [f"{array}_names", f"{singular}_names"]
    for key in keys:
        names = attrs.get(key)
        if isinstance(names, list | tuple):
            return names
    return None


def label_column_names(array: str, row_shape: tuple[int, ...], attrs: Mapping[str, Any]) -> list[str] | None:
    """Columns of the ``labels`` shard: ``valence``/``arousal``, AU names, classes, ``<dim>@<rater>``."""
    from avpipe.pipeline import labels

    names = attrs.get("label_names") or {}
    if array == "valence_arousal":
        return list(labels.VA_NAMES)
    if array == "action_units":
        return list(labels.AU_NAMES)
    prefix, _, task = array.partition(".")
    if prefix + "." == labels.MULTILABEL_PREFIX:
        classes = (names.get("multilabel") or {}).get(task)
        return [f"{task}.{name}" for name in classes] if classes else None
    if prefix + "." == labels.RATERS_PREFIX:
        raters = (names.get("raters") or {}).get(task)
        return [f"{task}@{rater}" for rater in raters] if raters else None
    return None


def table_columns(
    extractor: str, features: FeatureSet, extractor_class: type[Extractor] | None = None
) -> dict[str, np.ndarray]:
    """Column name -> 1-D array of length T: the timeline columns, then every table array's values."""
    columns: dict[str, np.ndarray] = {
        "time": np.asarray(features.time, dtype=np.float64),
        "frame_index": np.asarray(features.frame_index, dtype=np.int64),
        "mask": np.asarray(features.mask, dtype=np.uint8),
    }
    for array_name, array in features.arrays.items():
        array = np.asarray(array)
        if not is_table_array(array):
            continue
        row_shape = tuple(array.shape[1:])
        names = column_names(extractor, array_name, row_shape, features.attrs, extractor_class)
        flat = array.reshape(array.shape[0], -1) if row_shape else array[:, None]
        for position, name in enumerate(names):
            if name in columns:
                raise TableError(
                    f"{extractor}: array {array_name!r} gives column {name!r}, which another column "
                    "already has; rename the array or its names"
                )
            columns[name] = flat[:, position]
    return columns


def feature_table(
    extractor: str, features: FeatureSet, extractor_class: type[Extractor] | None = None
) -> pd.DataFrame:
    """The table of one extractor's FeatureSet (one row per frame, named columns)."""
    import pandas as pd

    return pd.DataFrame(table_columns(extractor, features, extractor_class), copy=False)


def joined_table(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Several features of one video side by side: ``time``, ``frame_index``, then per feature
    ``<feature>_mask`` and its value columns. A single feature's table is returned as it is."""
    import pandas as pd

    if len(tables) == 1:
        return next(iter(tables.values()))
    first_name, first = next(iter(tables.items()))
    parts = [first[["time", "frame_index"]]]
    seen = {"time": first_name, "frame_index": first_name}
    for name, table in tables.items():
        for column in ("time", "frame_index"):
            if not np.array_equal(table[column].to_numpy(), first[column].to_numpy()):
                raise TableError(
                    f"features {first_name!r} and {name!r} are on different timelines ({column} differs); "
                    "write them to separate files"
                )
        values = table.drop(columns=list(TIMELINE_COLUMNS)).copy(deep=False)
        values.insert(0, f"{name}_mask", table["mask"])
        for column in values.columns:
            if column in seen:
                raise TableError(
                    f"features {seen[column]!r} and {name!r} both have a column {column!r}; "
                    "write them to separate files"
                )
            seen[column] = name
        parts.append(values)
    return pd.concat(parts, axis=1)


def structured_array(table: pd.DataFrame) -> np.ndarray:
    """The table as a numpy structured array: one named field per column (``np.save`` keeps names)."""
    fields = []
    for name in table.columns:
        values = table[name].to_numpy()
        if values.dtype == object:
            raise TableError(f"column {name!r} holds Python objects, which a .npy file cannot store")
        fields.append((str(name), values.dtype))
    out = np.empty(len(table), dtype=fields)
    for name in table.columns:
        out[str(name)] = table[name].to_numpy()
    return out
