"""AES-256-CBC decryption of execution notices, with ``cryptography``.

Why ``cryptography``: the standard library has no AES, and hand-rolled crypto has no place in a
client. The key and IV are the subscribe answer's ``output.key`` (32 chars) and ``output.iv``
(16), used as UTF-8 bytes (KIS's sample); the payload is base64 with PKCS#7 padding.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .frames import FrameError

__all__ = ["decrypt", "require_cryptography"]

EXTRA_HINT = "pip install 'korea-investment-stock[realtime]'"


def require_cryptography() -> Any:
    """The ``cryptography`` modules we use, or an ImportError that names the extra."""
    try:
        from cryptography.hazmat.primitives import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError as exc:
        raise ImportError(
            f"execution notices are AES-encrypted and need the 'cryptography' package: {EXTRA_HINT}"
        ) from exc
    return padding, Cipher, algorithms, modes


def decrypt(payload: str, key: str, iv: str) -> str:
    """The plaintext ``^`` list of one encrypted frame's payload."""
    padding, cipher_class, algorithms, modes = require_cryptography()
    try:
        data = base64.b64decode(payload, validate=True)
        decryptor = cipher_class(algorithms.AES(key.encode()), modes.CBC(iv.encode())).decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return str((unpadder.update(padded) + unpadder.finalize()).decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise FrameError(f"an encrypted frame did not decrypt with its subscription's key: {exc}") from None
