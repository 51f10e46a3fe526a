"""The raw schema from the catalog, and the Arrow layout tf.Transform reads.

`NOT NULL` scalar columns are dense (`FixedLenFeature([])`); nullable columns and
arrays are variable-length (`VarLenFeature`, a SparseTensor in `preprocessing_fn`,
as TFX presents them). Floating columns reach `preprocessing_fn` as float32, as in TFX.

tf.Transform's RecordBatch input path wants every column as a list (dense ones with
exactly one value per row) matching a `TensorAdapterConfig` exactly;
`to_transform_batch` converts the reader's flat batches into that layout. It uses
`list<…>` and `binary` (32-bit offsets), not `large_list<…>` and `large_binary`: the
offsets were 112 of the 242 bytes per row the in-memory runner holds for each
materialized row (the examples are identical; one batch is a few MB, far from 2 GiB).

Raw feature keys are the columns' feature names (`transforms.names`), not the
column names: `names` maps column -> key (default: `feature_names` of `columns`;
the job passes the mapping of all the source's columns). The reader's batches
keep the column names; `to_transform_batch` renames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

from transforms.names import feature_names
from transforms.types import Column, Kind

__all__ = [
    "raw_feature_spec",
    "raw_metadata",
    "transform_arrow_schema",
    "tensor_adapter_config",
    "to_transform_batch",
    "TransformBatches",
]

_TF_DTYPE = {
    Kind.INT: tf.int64,
    Kind.FLOAT: tf.float32,
    Kind.BYTES: tf.string,
    Kind.DATE: tf.int64,
    Kind.TIMESTAMP: tf.int64,
}
_ARROW_VALUE = {
    Kind.INT: pa.int64(),
    Kind.FLOAT: pa.float32(),
    Kind.BYTES: pa.binary(),
    Kind.DATE: pa.int64(),
    Kind.TIMESTAMP: pa.int64(),
}


def is_dense(column: Column) -> bool:
    """A column is a dense feature iff it is a NOT NULL scalar."""
    return column.not_null and not column.is_array


def _keys(columns: Sequence[Column], names: Mapping[str, str] | None) -> list[str]:
    if names is None:
        names = feature_names(c.name for c in columns)
    return [names[c.name] for c in columns]


def raw_feature_spec(
    columns: Sequence[Column], names: Mapping[str, str] | None = None
) -> dict[str, tf.io.FixedLenFeature]:
    """The raw feature spec of the selected columns (see module docstring)."""
    spec = {}
    for column, key in zip(columns, _keys(columns, names), strict=True):
        dtype = _TF_DTYPE[column.kind]
        spec[key] = (
            tf.io.FixedLenFeature([], dtype)
            if is_dense(column)
            else tf.io.VarLenFeature(dtype)
        )
    return spec


def raw_metadata(
    columns: Sequence[Column], names: Mapping[str, str] | None = None
) -> dataset_metadata.DatasetMetadata:
    """DatasetMetadata of the raw rows (written to `<output>/metadata/`)."""
    return dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(raw_feature_spec(columns, names))
    )


def transform_arrow_schema(
    columns: Sequence[Column], names: Mapping[str, str] | None = None
) -> pa.Schema:
    """The Arrow schema of batches fed to tf.Transform (every column a list)."""
    keys = _keys(columns, names)
    return pa.schema(
        [
            pa.field(key, pa.list_(_ARROW_VALUE[c.kind]))
            for c, key in zip(columns, keys, strict=True)
        ]
    )


def tensor_adapter_config(
    columns: Sequence[Column], names: Mapping[str, str] | None = None
) -> tensor_adapter.TensorAdapterConfig:
    """The TensorAdapterConfig matching `transform_arrow_schema(columns)` exactly."""
    schema = schema_utils.schema_from_feature_spec(raw_feature_spec(columns, names))
    return tensor_adapter.TensorAdapterConfig(
        transform_arrow_schema(columns, names),
        tensor_representation_util.InferTensorRepresentationsFromSchema(schema),
    )


def _validity(array: pa.Array) -> np.ndarray:
    """[len(array)] bool: True where `array` holds a value (not NULL)."""
    bitmap = array.buffers()[0]
    if bitmap is None:  # no bitmap: all valid, or a null-typed array
        return np.full(len(array), array.null_count == 0)
    bits = np.unpackbits(
        np.frombuffer(bitmap, np.uint8),
        count=array.offset + len(array),
        bitorder="little",
    )
    return bits[array.offset :].view(bool)


# (raw type, value type) -> numpy dtype where numpy's cast is Arrow's (C casts).
_NUMPY_CASTS = {
    (pa.float64(), pa.float32()): np.float32,
    (pa.float32(), pa.float32()): np.float32,
    (pa.int64(), pa.int64()): np.int64,
}


def _numpy_list_array(
    array: pa.Array, dtype, value_type: pa.DataType, one_each: pa.Array, order
) -> pa.Array:
    """`_as_list_array` of a fixed-width scalar column (rows in `order`), in numpy."""
    start = array.offset
    raw = np.frombuffer(array.buffers()[1], array.type.to_pandas_dtype())
    raw = raw[start : start + len(array)]
    valid = _validity(array) if array.null_count else None
    if order is not None:
        raw = raw[order]
        valid = None if valid is None else valid[order]
    elif valid is None and array.type == value_type:
        return pa.ListArray.from_arrays(one_each, array)
    values = pa.array((raw if valid is None else raw[valid]).astype(dtype), value_type)
    if valid is None:
        return pa.ListArray.from_arrays(one_each, values)
    offsets = np.zeros(len(raw) + 1, dtype=np.int32)
    np.cumsum(valid, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _as_list_array(
    array: pa.Array, value_type: pa.DataType, is_array: bool, one_each: pa.Array
) -> pa.Array:
    """`array` as `list<value_type>`; `one_each` is the offsets 0..len(array)."""
    if not is_array and not array.null_count:  # one value per row
        return pa.ListArray.from_arrays(one_each, array.cast(value_type))
    if is_array:
        # NULL array -> no values; NULL elements inside an array are dropped.
        lengths = pc.fill_null(pc.list_value_length(array), 0)
        flat = pc.list_flatten(array)
        if flat.null_count:
            parents = pc.list_parent_indices(array)
            valid = pc.is_valid(flat)
            lengths = pa.array(
                np.bincount(
                    parents.to_numpy()[valid.to_numpy(zero_copy_only=False)],
                    minlength=len(array),
                ),
                pa.int64(),
            )
            flat = flat.filter(valid)
        values = flat.cast(value_type)
        lengths = lengths.to_numpy(zero_copy_only=False)
    else:
        values = array.drop_null().cast(value_type)
        lengths = _validity(array)
    offsets = np.zeros(len(array) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


class TransformBatches:
    """Converts raw reader batches of `columns` to `transform_arrow_schema(columns)`.

    The per-column plan and the schema are computed once, for every batch.
    Raises ValueError naming the column when a NOT NULL column holds a NULL.
    """

    def __init__(
        self, columns: Sequence[Column], names: Mapping[str, str] | None = None
    ):
        self._schema = transform_arrow_schema(columns, names)
        self._plan = tuple(
            (c.name, _ARROW_VALUE[c.kind], c.is_array, is_dense(c)) for c in columns
        )

    def __call__(
        self, batch: pa.RecordBatch, order: np.ndarray | None = None
    ) -> pa.RecordBatch:
        """The batch converted; its rows taken in `order` (row indices) when given."""
        rows = batch.num_rows if order is None else len(order)
        one_each = pa.array(np.arange(rows + 1, dtype=np.int32))
        take = None if order is None else pa.array(order)
        arrays = []
        with np.errstate(over="ignore"):  # beyond float32 -> ±inf, as Arrow casts
            for name, value_type, is_array, dense in self._plan:
                array = batch.column(name)
                if dense and array.null_count:
                    raise ValueError(f'column "{name}" is NOT NULL but holds NULLs')
                dtype = None if is_array else _NUMPY_CASTS.get((array.type, value_type))
                if dtype is not None:
                    arrays.append(
                        _numpy_list_array(array, dtype, value_type, one_each, order)
                    )
                    continue
                if take is not None:
                    array = array.take(take)
                arrays.append(_as_list_array(array, value_type, is_array, one_each))
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)


def to_transform_batch(
    batch: pa.RecordBatch,
    columns: Sequence[Column],
    names: Mapping[str, str] | None = None,
) -> pa.RecordBatch:
    """Converts a raw reader batch to `transform_arrow_schema(columns)`.

    Raises ValueError naming the column when a NOT NULL column holds a NULL.
    (`TransformBatches` does the same for many batches of the same columns.)
    """
    return TransformBatches(columns, names)(batch)
