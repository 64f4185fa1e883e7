"""Reading downloaded pickles (cifar10's batches, the StackGAN authors' cub200 embeddings) safely.

Unpickling can run code: a pickle names a callable and its arguments, and plain `pickle.load`
calls it (a tampered file's reduce can be `os.system`). `load` resolves only the few numpy names
that rebuild an array or a dtype; plain containers, strings, bytes and numbers need no name and
load as usual. Anything else (os.system, builtins.eval, a class of some module) is refused with a
DataError naming the file, before anything of it runs.
"""
from __future__ import annotations

import io
import pickle

from ganray.data import DataError

ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles of arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 encode bytes this way
})


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file, what: str, **kw):
        super().__init__(file, **kw)
        self.what = what

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(f"{self.what}: refusing to unpickle {module}.{name} "
                            "(only numpy arrays and plain lists, dicts, strings and numbers are expected)")
        return super().find_class(module, name)


def load(raw: bytes, what: str, encoding: str = "bytes"):
    """Unpickle `raw` (the file `what`, named in errors) resolving only numpy's array names.

    encoding: how Python 2 str objects come back: "bytes" (cifar10's dict keys are b"data") or
    "latin1" (Python 2 pickles of numpy arrays and of file names as str, the StackGAN files).
    A refused name or an unreadable pickle raises DataError naming `what`.
    """
    try:
        return _ArrayUnpickler(io.BytesIO(raw), what, encoding=encoding).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001  (pickle raises anything on garbage)
        raise DataError(f"{what} is not a readable pickle: {type(e).__name__}: {e}") from None
