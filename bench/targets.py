"""Target rows, one shape for every section: what was wanted, what was measured, and the verdict."""

from __future__ import annotations

from typing import Any


def target_row(
    name: str, wanted: str, measured: str, ok: bool | None, labels: tuple[str, str] = ("pass", "MISS")
) -> dict[str, Any]:
    """One row of a targets table; ``ok`` None means the figure was not measured in this run."""
    met, missed = labels
    return {
        "target": name,
        "wanted": wanted,
        "measured": measured,
        "result": "not measured" if ok is None else (met if ok else missed),
    }


def missed(rows: list[dict[str, Any]], label: str) -> str:
    """``name = measured (wanted ...)`` for every row whose result is ``label``, joined; empty if none."""
    return "; ".join(f"{t['target']} = {t['measured']} (wanted {t['wanted']})" for t in rows if t["result"] == label)
