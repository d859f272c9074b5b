"""Reading a KIS quotation answer: did it succeed, did it carry data, and when is a symbol unknown.

KIS answers a symbol it does not know with success (``rt_cd`` ``"0"``) and an
``output`` whose fields are all blank, not with an error code.  That rule
lives here once: the client's methods that raise
:class:`~.errors.SymbolNotFoundError` and ``kis-token price`` both use it.
"""

from __future__ import annotations

from typing import Any

from .errors import KISAPIError, SymbolNotFoundError
from .transport import kis_code


def has_data(answer: dict[str, Any]) -> bool:
    """True when KIS answered with success and an ``output`` that has at least one non-blank field."""
    output = answer.get("output")
    return answer.get("rt_cd") == "0" and isinstance(output, dict) and any(output.values())


def require_output(answer: dict[str, Any], symbol: str) -> dict[str, Any]:
    """The ``output`` of a successful answer about ``symbol``.

    Raises :class:`~.errors.KISAPIError` when KIS refused (``rt_cd`` not
    ``"0"``), and :class:`~.errors.SymbolNotFoundError` when it succeeded with
    a blank ``output``: KIS does not know the symbol.
    """
    if answer.get("rt_cd") != "0":
        code = kis_code(answer)
        raise KISAPIError(
            f"KIS answered {code or '?'} for {symbol!r}: {answer.get('msg1', '')}".strip(),
            msg_cd=code,
            msg1=answer.get("msg1"),
        )
    if not has_data(answer):
        raise SymbolNotFoundError(
            f"KIS has no data for {symbol!r}: an unknown symbol (or one of another market)",
            msg_cd=kis_code(answer),
            msg1=answer.get("msg1"),
        )
    output: dict[str, Any] = answer["output"]
    return output


__all__ = ["has_data", "require_output"]
