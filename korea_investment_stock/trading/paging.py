"""Following KIS's continuation pages to the end, with a bound on pages and on time.

The rules (see the facts sheet, "Continuation paging"): the response header
``tr_cont`` says whether more pages follow (``F``/``M``) or not (``D``/``E``);
the next request sends ``tr_cont: N`` and copies the body's ``ctx_area_*``
keys into the query.  ``SYDB0050`` (``rt_cd`` ``"7"``) means the data changed
between pages: the only correct answer is to start again from the first page,
since repeating the page loops forever.  Peers that stop after one page, loop
on ``M`` alone, or forget ``tr_cont: N`` lose rows; this module does none of that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import PagingError
from ..transport import KISResponse
from .context import RestCall
from .rejections import rejection

#: Pages one query may read before it is refused as runaway (KIS's own sample stops at 10;
#: 501 positions at 20 a page on mock take 26).
DEFAULT_MAX_PAGES = 200
#: Seconds one query may take over all its pages and restarts.
DEFAULT_MAX_SECONDS = 120.0
#: Times a query starts over on ``SYDB0050`` before giving up.
DEFAULT_MAX_RESTARTS = 5
#: The code KIS answers when the data changed between pages.
DATA_CHANGED_CODE = "SYDB0050"
_MORE = frozenset({"F", "M"})


@dataclass(frozen=True)
class PagedQuery:
    """One paged query: where, which id, its fixed fields, and the width of its continuation keys."""

    method: str
    path: str
    tr_id: str
    params: dict[str, str]
    what: str
    key_width: int = 100  # overseas queries use the 200-wide keys

    def _keys(self) -> tuple[str, str]:
        return f"CTX_AREA_FK{self.key_width}", f"CTX_AREA_NK{self.key_width}"


def read_all_pages(
    call: RestCall,
    query: PagedQuery,
    *,
    max_pages: int = DEFAULT_MAX_PAGES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
) -> list[KISResponse]:
    """Every page of ``query``, first to last; raises :class:`PagingError` past a bound.

    A refusal (``rt_cd`` other than ``"0"``/``"7"``) raises the matching
    :class:`~.errors.OrderRejectedError`.
    """
    deadline = time.monotonic() + max_seconds
    restarts = 0
    fk_name, nk_name = query._keys()
    while True:
        pages: list[KISResponse] = []
        keys = ("", "")
        seen: set[tuple[str, str]] = set()
        while True:
            if len(pages) >= max_pages:
                raise PagingError(f"{query.what} did not end within {max_pages} pages")
            if time.monotonic() > deadline:
                raise PagingError(f"{query.what} did not end within {max_seconds:g}s")
            params = {**query.params, fk_name: keys[0], nk_name: keys[1]}
            response = call(query.method, query.path, query.tr_id, params=params, tr_cont="N" if pages else "")
            answer = response.body
            if _data_changed(answer):
                restarts += 1
                if restarts > max_restarts:
                    raise PagingError(f"{query.what}: the data kept changing between pages ({restarts} restarts)")
                break
            if answer.get("rt_cd") != "0":
                raise rejection(answer, response.status, query.what)
            pages.append(response)
            if response.tr_cont not in _MORE:
                return pages
            keys = (_key(answer, fk_name), _key(answer, nk_name))
            if keys in seen:
                raise PagingError(f"{query.what}: KIS repeated a continuation key; stopping instead of looping")
            seen.add(keys)
        # only a restart leaves the inner loop: read again from the first page


def _data_changed(answer: dict[str, Any]) -> bool:
    return answer.get("msg_cd") == DATA_CHANGED_CODE or answer.get("rt_cd") == "7"


def _key(answer: dict[str, Any], name: str) -> str:
    value = answer.get(name.lower(), answer.get(name, ""))
    return str(value or "")
