"""The fleet flood: P x T callers quoting flat out through one app key against KIS's per-second limit.

The targets of issue 12, checked at the fake KIS server (which enforces 20/s,
or 2/s on the mock profile): no ``EGW00201``, no caller error, at least 90 %
of the nominal budget used, every process within 20 % of its fair share.
Each scenario prints one summary line.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testsupport.flood import FloodConfig, FloodResult, run_flood, summary_fields

WINDOW = 10.0


@dataclass
class FloodFigures:
    """A flood's summary, in the shape the stress report records."""

    scenario: str
    result: FloodResult

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, **summary_fields(self.result), "line": self.result.line(self.scenario)}


def _flood(kis: Any, tmp_path: Path, processes: int, threads: int, *, groups: int = 1, **config: Any) -> FloodResult:
    base = FloodConfig(
        url=kis.url, app_key=kis.app_key, app_secret=kis.app_secret, token_file="", threads=threads, **config
    )
    return run_flood(kis, base, processes, WINDOW, groups=groups, workdir=tmp_path)


def _assert_targets(result: FloodResult, budget: float = 0.90) -> None:
    samples = sorted({s for r in result.reports for s in r.error_samples})[:3]
    assert result.egw00201 == 0, result.line("flood")
    assert result.caller_errors == 0, samples
    assert result.budget_used >= budget, result.line("flood")
    assert result.worst_share_deviation <= 0.20, result.line("flood")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("storage", ["file", "redis"])
def test_fleet_flood_8x16(storage: str, kis_factory: Any, tmp_path: Path, report: Any, request: Any) -> None:
    kis = kis_factory(rest_rate_limit=20)
    extra: dict[str, Any] = {"storage": storage}
    if storage == "redis":
        extra.update(redis_url=request.getfixturevalue("shared_redis_url"), key_prefix=f"kis-flood:{uuid.uuid4().hex}")
    result = _flood(kis, tmp_path, 8, 16, **extra)
    report(FloodFigures(f"fleet-flood[8x16,{storage}]", result))
    _assert_targets(result)


@pytest.mark.timeout(180)
def test_fleet_flood_two_groups_sharing_only_redis(
    kis_factory: Any, tmp_path: Path, report: Any, shared_redis_url: str
) -> None:
    kis = kis_factory(rest_rate_limit=20)
    result = _flood(
        kis,
        tmp_path,
        8,
        16,
        groups=2,
        storage="redis",
        redis_url=shared_redis_url,
        key_prefix=f"kis-flood:{uuid.uuid4().hex}",
    )
    report(FloodFigures("fleet-flood[2 groups x 4x16,redis only]", result))
    _assert_targets(result)
    assert {r.group for r in result.reports} == {0, 1}


@pytest.mark.timeout(180)
def test_fleet_flood_mock_profile(kis_factory: Any, tmp_path: Path, report: Any) -> None:
    kis = kis_factory(rest_rate_limit=2, environment="mock")
    result = _flood(kis, tmp_path, 4, 8, storage="file", mock=True)
    report(FloodFigures("fleet-flood[4x8,file,mock 2/s]", result))
    # At 2/s a 10 s window holds 18-19 calls: one call more or less moves a process's share by a
    # fifth, so fairness is checked on the real profile only.
    assert result.egw00201 == 0, result.line("flood")
    assert result.caller_errors == 0
    assert result.budget_used >= 0.85, result.line("flood")
