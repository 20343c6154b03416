"""Reading and writing ONNX files safely: clear errors for bad files, never a half-written output,
never an overwritten input, no external data read from outside the model's folder."""
from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from ._files import atomic_write
from .errors import UsageError


def load_model(path: str | os.PathLike) -> ir.Model:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a file (give the path of an .onnx model)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        raise UsageError(f"{path}: not a readable ONNX model ({type(e).__name__}); is it truncated or corrupt?") from None
    if not proto.graph.node:
        raise UsageError(f"{path}: the ONNX graph is empty; is the file truncated or corrupt?")
    _check_external_data(proto, path)
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise UsageError(f"{path}: cannot read its external data ({e})") from None
    return ir.serde.deserialize_model(proto)


def _check_external_data(proto: onnx.ModelProto, path: Path) -> None:
    folder = path.parent.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if os.path.isabs(location) or folder not in target.parents:
            raise UsageError(f"{path}: tensor {tensor.name!r} points its external data at {location!r}, outside "
                             "the model's folder; refusing to read it (move the data file beside the model)")
        if not target.is_file():
            raise UsageError(f"{path}: external data file {location!r} of tensor {tensor.name!r} is missing")


def save_model(model: ir.Model, out: str | os.PathLike) -> Path:
    """Write ``model`` atomically (temp file + rename), weights inline."""
    out = Path(out)
    with atomic_write(out) as tmp:
        try:
            ir.save(model, tmp)
        except ValueError as e:  # protobuf refuses > 2 GB
            raise UsageError(f"cannot write {out}: {e}") from None
    return out
