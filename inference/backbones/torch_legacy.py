"""Reads a pre-1.6 PyTorch checkpoint (the legacy, non-zip format) into numpy arrays without torch.

The legacy format is a stream of pickles followed by raw storage bytes:
magic number, protocol version, system info, the state dict (tensors refer to storages by key
through ``persistent_id``), the list of storage keys in file order, then for each key an int64
element count and the storage's raw little-endian bytes. Tensors are strided views of storages;
weights converted from TensorFlow keep TF's memory layout, so strides must be honoured.

Only the few globals such a state dict needs are allowed, so a malicious file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class LegacyCheckpointError(ValueError):
    """The file is not a legacy PyTorch state dict this reader understands."""


@dataclass(frozen=True)
class _StorageRef:
    key: str
    type_name: str


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage=storage, offset=storage_offset, shape=tuple(size), stride=tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        raise LegacyCheckpointError(f"unexpected object {module}.{name} in checkpoint; refusing to load it")

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise LegacyCheckpointError(f"unexpected persistent id {saved_id!r}")
        _, type_name, key, _location, _size, view_metadata = saved_id
        if view_metadata is not None:
            raise LegacyCheckpointError("storage views are not supported")
        return _StorageRef(key=key, type_name=type_name)


def _load_pickle(stream):
    # Safe: _RestrictedUnpickler only resolves the globals listed in find_class.
    return _RestrictedUnpickler(stream).load()  # noqa: S301


def _read_storages(stream, keys: list[str], type_names: dict[str, str]) -> dict[str, np.ndarray]:
    storages = {}
    for key in keys:
        dtype = np.dtype(STORAGE_DTYPES[type_names[key]])
        header = stream.read(8)
        if len(header) != 8:
            raise LegacyCheckpointError(f"file ends before storage {key}")
        count = int(np.frombuffer(header, dtype="<i8")[0])
        data = stream.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise LegacyCheckpointError(f"file ends inside storage {key}")
        storages[key] = np.frombuffer(data, dtype=dtype.newbyteorder("<"))
    return storages


def _materialize(ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    if ref.shape:
        last_index = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    else:
        last_index = ref.offset
    if last_index >= storage.size:
        raise LegacyCheckpointError(f"tensor reaches past the end of storage {ref.storage.key}")
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :],
        shape=ref.shape,
        strides=tuple(s * storage.itemsize for s in ref.stride),
        writeable=False,
    )
    return np.array(view, dtype=storage.dtype.newbyteorder("="), copy=True)


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{parameter name: numpy array}`` from a legacy (pre-1.6) PyTorch state-dict file."""
    with open(path, "rb") as stream:
        try:
            magic = _load_pickle(stream)
            if magic != LEGACY_MAGIC_NUMBER:
                raise LegacyCheckpointError(f"{path} is not a legacy PyTorch checkpoint (bad magic number)")
            _load_pickle(stream)  # protocol version
            system_info = _load_pickle(stream)
            if not system_info.get("little_endian", True):
                raise LegacyCheckpointError("big-endian checkpoints are not supported")
            state = _load_pickle(stream)
            keys = _load_pickle(stream)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            if isinstance(exc, LegacyCheckpointError):
                raise
            raise LegacyCheckpointError(f"{path} is not a readable legacy PyTorch checkpoint: {exc}") from exc
        refs = {name: value for name, value in state.items() if isinstance(value, _TensorRef)}
        type_names = {ref.storage.key: ref.storage.type_name for ref in refs.values()}
        missing = set(type_names) - set(keys)
        if missing:
            raise LegacyCheckpointError(f"storages referenced but not stored: {sorted(missing)[:5]}")
        storages = _read_storages(stream, keys, type_names)
    return {name: _materialize(ref, storages[ref.storage.key]) for name, ref in refs.items()}
