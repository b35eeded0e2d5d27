"""The compiler's one error: `CompileError`, a `TinyopsError` that names the model file.

Everything the compiler rejects (a corrupt or truncated .tflite, a float or hybrid
model, an operator it has no kernel for, shapes or quantization a kernel cannot honour, a
plan that breaks an invariant, a toolchain failure) is reported as one `CompileError`
whose message starts with the model's source (its path) and names the operator index and
tensor involved, so the user can find it in Netron or `tinyops profile` output.
"""

from __future__ import annotations

from tinyops.errors import TinyopsError


class CompileError(TinyopsError):
    """A model cannot be compiled to C: the message names the file, operator and field."""
