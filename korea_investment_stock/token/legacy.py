"""Reading 0.6.0-era pickle token files without trusting them.

Those files hold a plain dict of str/int values.  Such a pickle never needs to
import anything, so the unpickler below refuses every global: it can rebuild
builtin containers and scalars and nothing else, which makes loading a hostile
file harmless.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

#: Protocol 2+ pickles start with the PROTO opcode.
PICKLE_MAGIC = b"\x80"


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"token files may not reference {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("token files may not use persistent ids")


def looks_like_pickle(data: bytes) -> bool:
    """True for bytes that start like a protocol 2+ pickle."""
    return data.startswith(PICKLE_MAGIC)


def load_plain_pickle(data: bytes) -> Any:
    """Unpickle builtin data only; raise ``ValueError`` for anything else."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # any failure means "not a token file we can use"
        raise ValueError(f"unreadable legacy token file: {type(exc).__name__}") from None
