"""The human table, the targets of issues 5 (pass/MISS) and 12 (met/MISSED), and the optional plot."""

from __future__ import annotations

import math
from typing import Any

from .targets import missed, target_row

LOOKUP_OP = "check_token_valid + load_token"
FAST_PATH_OP = "get_token (fast path)"
TARGET_SIZE = "8x16"
FLOOR_MS = 0.1  # ratios divide by at least this, and say so with ">="
#: Anchors whose lock, by default, never expires: a killed holder blocks everyone.
NO_EXPIRY = {"redis-py Lock", "python-redis-lock"}


def print_header(
    mode: str,
    facts: dict[str, Any],
    sizes: list[tuple[int, int]],
    runs: int,
    delay: float,
    *,
    sections: set[str] | None = None,
    fleet: tuple[list[tuple[int, int]], float] | None = None,
) -> None:
    sizes_text = ", ".join(f"{p}x{t}" for p, t in sizes)
    what = []
    if sections is None or "stampede" in sections:
        what.append(f"stampedes {sizes_text}, {runs} run(s) each, {delay * 1000:.0f} ms issuance")
    if fleet is not None and (sections is None or "ratelimit" in sections):
        fleet_sizes, seconds = fleet
        what.append(f"rate-limit floods {', '.join(f'{p}x{t}' for p, t in fleet_sizes)}, {seconds:g} s window")
    others = sorted((sections or set()) - {"stampede", "ratelimit"})
    if others:
        what.append(", ".join(others))
    print(f"korea-investment-stock bench ({mode}): " + "; ".join(what), flush=True)
    print(
        f"machine: {facts.get('cpu_model')}, {facts.get('nproc')} CPUs, Python {facts.get('python')}, "
        f"redis-server {facts.get('redis_server') or 'none'}, load {facts.get('load_average')}",
        flush=True,
    )


# --------------------------------------------------------------------------- targets
def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _target(name: str, target: str, measured: str, ok: bool | None) -> dict[str, Any]:
    return target_row(name, target, measured, ok)


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    lookup = result.get("lookup") or []
    redis_fast = _find(lookup, impl="ours", backend="redis", op=FAST_PATH_OP)
    redis_pair = _find(lookup, impl="ours", backend="redis", op=LOOKUP_OP)
    file_fast = _find(lookup, impl="ours", backend="file", op=FAST_PATH_OP)
    file_pair = _find(lookup, impl="ours", backend="file", op=LOOKUP_OP)
    if redis_fast:
        trips = redis_fast["round_trips"]
        out.append(_target("lookup: Redis round trips (get_token fast path)", "1", f"{trips:g}", trips <= 1))
    else:
        out.append(_target("lookup: Redis round trips (get_token fast path)", "1", "-", None))
    if redis_pair:
        per_call = redis_pair["round_trips"] / 2
        out.append(
            _target(
                "lookup: Redis round trips per call (check_token_valid, load_token)",
                "1",
                f"{per_call:g}",
                per_call <= 1,
            )
        )
    for label, row in (("check+load", redis_pair), ("get_token", redis_fast)):
        out.append(
            _target(
                f"lookup: Redis p99 ({label})",
                "<= 1000 us",
                f"{row['p99_us']:.0f} us" if row else "-",
                row["p99_us"] <= 1000 if row else None,
            )
        )
    for label, row in (("check+load", file_pair), ("get_token", file_fast)):
        out.append(
            _target(
                f"lookup: file p99 ({label})",
                "<= 500 us",
                f"{row['p99_us']:.0f} us" if row else "-",
                row["p99_us"] <= 500 if row else None,
            )
        )

    cells = result.get("stampede") or []
    for kind in ("ours file", "ours Redis"):
        cell = _find(cells, kind=kind, size=TARGET_SIZE)
        name = f"{TARGET_SIZE} {kind}"
        if cell is None:
            out.append(_target(f"{name}: issuances", "exactly 1 per run", "-", None))
            out.append(_target(f"{name}: follower p95", "<= 5 ms", "-", None))
            continue
        issuances = cell["issuances"]
        out.append(
            _target(
                f"{name}: issuances",
                "exactly 1 per run",
                ",".join(map(str, issuances)),
                all(n == 1 for n in issuances) and cell["errors"] == 0,
            )
        )
        p95 = cell["follower_wait"]["p95_ms"]
        out.append(_target(f"{name}: follower p95", "<= 5 ms", f"{p95:.1f} ms", p95 <= 5.0))
        if kind == "ours Redis":
            limit = 4 * cell["processes"] + 10
            worst = max(cell["redis_commands"]) if cell["redis_commands"] else None
            out.append(
                _target(
                    f"{name}: Redis commands per stampede",
                    f"<= 4/process + 10 = {limit}",
                    "-" if worst is None else f"{worst} (max of runs)",
                    None if worst is None else worst <= limit,
                )
            )
    crash = result.get("crash") or []
    file_crash = _find(crash, kind="ours file")
    out.append(
        _target(
            "crash recovery: file",
            "<= 100 ms after the holder dies",
            _ms(file_crash.get("all_hold_ms")) if file_crash else "-",
            _ok(file_crash, 100.0) if file_crash else None,
        )
    )
    redis_crash = _find(crash, kind="ours Redis")
    lease = redis_crash.get("lease_s") if redis_crash else None
    out.append(
        _target(
            "crash recovery: Redis",
            f"<= one lease ({lease:g} s)" if lease else "<= one lease",
            _ms(redis_crash.get("all_hold_ms")) if redis_crash else "-",
            _ok(redis_crash, lease * 1000.0) if redis_crash and lease else None,
        )
    )
    return out


def _ok(row: dict[str, Any], limit_ms: float) -> bool:
    value = row.get("all_hold_ms")
    return value is not None and row.get("errors", 1) == 0 and value <= limit_ms


def _ms(value: float | None) -> str:
    return "never (cap)" if value is None else f"{value:.0f} ms"


def automatic_notes(result: dict[str, Any]) -> list[str]:
    notes = []
    misses = missed(result.get("targets", []), "MISS")
    if misses:
        notes.append(f"Missed: {misses}. Why: see the notes below.")
    for cell in result.get("stampede") or []:
        if cell["size"] != TARGET_SIZE or not cell["kind"].startswith("ours"):
            continue
        callers = cell["processes"] * cell["threads"]
        p95 = cell["follower_wait"]["p95_ms"]
        if p95 > 5.0:
            detect = cell["first_follower_per_other_process"]
            fan = cell["rest_of_process_after_its_first"]
            wake_only = next(
                (c for c in result.get("stampede") or [] if c["size"] == TARGET_SIZE and c["family"] == "none"), None
            )
            wake_text = ""
            if wake_only is not None:
                fw = wake_only["follower_wait"]
                wake_text = (
                    f" In the same run, waking the same callers with no store at all (wake-up only) took p50 "
                    f"{fw['p50_ms']:.1f} / p95 {fw['p95_ms']:.1f} ms."
                )
            notes.append(
                f"{cell['kind']} {TARGET_SIZE} follower p95 {p95:.1f} ms: the first caller of each other process "
                f"held the token after p50 {detect['p50_ms']:.1f} / p95 {detect['p95_ms']:.1f} ms (noticing the "
                f"store across processes), the rest of that process's threads p50 {fan['p50_ms']:.1f} / p95 "
                f"{fan['p95_ms']:.1f} ms after it (waking {cell['threads'] - 1} waiting threads on "
                f"{result.get('machine', {}).get('nproc')} CPUs).{wake_text}"
            )
        if cell["family"] == "redis" and cell["redis_commands"]:
            limit = 4 * cell["processes"] + 10
            worst = max(range(len(cell["redis_commands"])), key=lambda i: cell["redis_commands"][i])
            total = cell["redis_commands"][worst]
            per = cell["redis_commands_by_name"][worst]
            if total > limit:
                reads = per.get("hgetall", 0)
                why = ""
                if reads >= callers:
                    why = (
                        f"; {reads} of them are HGETALL for {callers} callers: every caller thread reads the "
                        "store once on get_token's fast path, before the in-process single flight, so the "
                        "count grows with threads, not processes"
                    )
                by_name = ", ".join(f"{k} {v}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
                notes.append(
                    f"{cell['kind']} {TARGET_SIZE} used {total} Redis commands (target {limit}){why}. "
                    f"INFO counts commands run inside Lua scripts too. By command: {by_name}."
                )
    for cell in result.get("stampede") or []:
        if cell["errors"]:
            callers = cell["processes"] * cell["threads"] * cell["runs"]
            samples = "; ".join(e.rstrip(": ") for e in cell["error_samples"])
            notes.append(
                f"{cell['kind']} at {cell['size']}: {cell['errors']} of {callers} callers failed ({samples}); "
                "the bench caps every lock wait at 60 s, so a caller that had not got the lock by then raised. "
                "Their waits are not in the percentiles."
            )
    for row in result.get("crash") or []:
        if any("Timeout reading" in e for e in row.get("error_samples", [])):
            notes.append(
                f"Crash row, {row['kind']}: its waiters block in BLPOP on a lock that never expires by default; "
                "the 5 s default socket timeout of the installed redis-py ends that wait with an error."
            )
    notes.extend(ratelimit_notes(result.get("ratelimit") or {}))
    load = result.get("machine", {}).get("load_average") or []
    cpus = result.get("machine", {}).get("nproc") or 1
    if load and load[0] > 0.5 * cpus:
        notes.append(
            f"Load average {load} at the start on {cpus} CPUs: other work shared the machine, so tails are inflated."
        )
    return notes


# --------------------------------------------------------------------------- table
def _ratio(anchor: float, ours: float) -> str:
    if any(math.isnan(x) for x in (anchor, ours)):
        return "-"
    if ours < FLOOR_MS:
        return f">={anchor / FLOOR_MS:.0f}x"
    value = anchor / ours
    return f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def _anchor_ratio(anchor: dict[str, Any], ours: dict[str, Any]) -> str:
    """Anchor p95 / ours p95; when every anchor follower failed at the 60 s cap, a lower bound."""
    mine = ours["follower_wait"]["p95_ms"]
    if anchor["follower_wait"]["n"] == 0 and anchor["errors"] and not math.isnan(mine):
        return f">{60000.0 / max(mine, FLOOR_MS):.0f}x (cap)"
    return _ratio(anchor["follower_wait"]["p95_ms"], mine)


def _num(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(headers)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render(result: dict[str, Any]) -> str:
    parts: list[str] = []
    lookup = result.get("lookup")
    if lookup:
        rows = []
        for r in lookup:
            unit = "opens" if r["backend"] == "file" else "cmds"
            ratio = r.get("naive_over_ours")
            rows.append(
                [
                    r["backend"],
                    r["impl"],
                    r["op"],
                    f"{r['round_trips']:g} {unit}",
                    f"{r['p50_us']:.1f}",
                    f"{r['p99_us']:.1f}",
                    f"{ratio['round_trips']:g}x" if ratio else "(base)",
                    f"{ratio['p50']:.1f}x" if ratio else "(base)",
                    f"{ratio['p99']:.1f}x" if ratio else "(base)",
                ]
            )
        parts.append(
            "1. Stored-token lookup: a valid token already stored; naive = the 0.6.x flows; the last three columns\n"
            "   are naive / ours for trips, p50 and p99 (higher = ours better; ours below 1x is slower than naive)\n"
            + _table(
                ["store", "impl", "operation", "round trips", "p50 us", "p99 us", "trips", "p50", "p99"],
                rows,
                right={3, 4, 5, 6, 7, 8},
            )
        )
    ctor = result.get("construction")
    if ctor:
        rows = [
            [r["backend"], f"{r['p50_us']:.0f}", f"{r['p99_us']:.0f}", str(r["n"]), str(r["tokenp_calls_while_timed"])]
            for r in ctor
        ]
        parts.append(
            "2. KoreaInvestment() with a valid stored token (fake KIS on loopback, one shared store)\n"
            + _table(["store", "p50 us", "p99 us", "n", "tokenP calls"], rows)
        )
    cells = result.get("stampede")
    if cells:
        parts.append(_render_stampede(result, cells))
    crash = result.get("crash")
    if crash:
        rows = []
        for r in crash:
            if "error" in r:
                rows.append([r["kind"], "-", "-", "-", "-", "-", "-", r["error"]])
                continue
            rows.append(
                [
                    r["kind"],
                    f"{r['lease_s']:g} s" if r.get("lease_s") else "none" if r["kind"] in NO_EXPIRY else "-",
                    f"{r['cap_s']:g} s",
                    _ms(r.get("takeover_ms")),
                    _ms(r.get("first_hold_ms")),
                    _ms(r.get("all_hold_ms")),
                    str(r["issuances"]),
                    f"{r['errors']}" + (f" ({r['error_samples'][0]})" if r["errors"] else ""),
                ]
            )
        parts.append(
            "4. Holder crash recovery: the holder is SIGKILLed mid-issuance while 3x4 callers wait; their own "
            "issuance is instant,\n   so the times (from the kill) are the store's alone. 'never (cap)' = still "
            "waiting when the bench gave up;\n   'issuances' counts the killed one. Anchors use their default "
            "lock expiry ('none' = the lock never expires)\n"
            + _table(
                ["design", "lease", "gave up at", "new issuer starts", "first holds", "all hold", "issuances"]
                + ["errors"],
                rows,
                right={1, 2, 3, 4, 5, 6},
            )
        )
    limits = result.get("ratelimit")
    if limits:
        parts.append(_render_ratelimit(limits))
    targets = result.get("targets")
    if targets and any(t["result"] != "not measured" for t in targets):  # none of its sections ran: no table
        rows = [[t["target"], t["wanted"], t["measured"], t["result"]] for t in targets]
        parts.append("Targets (issue 5)\n" + _table(["target", "wanted", "measured", "result"], rows, right={2}))
    limit_targets = (limits or {}).get("targets")
    if limit_targets:
        rows = [[t["target"], t["wanted"], t["measured"], t["result"]] for t in limit_targets]
        parts.append(
            "Targets (issue 12, rate limits)\n" + _table(["target", "wanted", "measured", "result"], rows, right={2})
        )
    notes = result.get("notes")
    if notes:
        parts.append("Notes\n" + "\n".join(f"- {n}" for n in notes))
    start_load = result.get("machine", {}).get("load_average")
    parts.append(
        f"duration {result.get('duration_s')} s; load average at the start {start_load}, at the end "
        f"{result.get('load_average_end')} (the end value counts the bench's own processes)"
    )
    return "\n\n".join(parts)


def _render_stampede(result: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    delay = result.get("config", {}).get("issue_delay_s", 0.2) * 1000
    out = [
        f"3. Cold stampede, P x T callers on an empty store, {delay:.0f} ms simulated issuance.\n"
        "   follower wait = time from the token being stored to a non-issuing caller holding it "
        "(one time.time() clock);\n   'x ours' = this design's p95 / ours on the same store "
        "(higher = ours better);\n   'wake-up only (no store)' is a reference, not a design: the issuer writes a "
        "byte per process to a pipe,\n   one thread per process wakes its siblings (our stores' wake-up shape with "
        "no read, lock or command):\n   what scheduling the callers alone costs on this machine"
    ]
    for size in dict.fromkeys(c["size"] for c in cells):
        group = [c for c in cells if c["size"] == size]
        ours = {c["family"]: c for c in group if c["kind"].startswith("ours")}
        rows = []
        for c in group:
            w = c["follower_wait"]
            mine = ours.get(c["family"])
            ratio = "-" if c["kind"].startswith("ours") or mine is None else _anchor_ratio(c, mine)
            cmds = c["redis_commands"]
            rows.append(
                [
                    c["kind"],
                    "-" if c["family"] == "none" else c["family"],
                    ",".join(map(str, c["issuances"])),
                    _num(w["p50_ms"]),
                    _num(w["p95_ms"]),
                    _num(w["max_ms"]),
                    "/".join(map(str, cmds)) if cmds else "-",
                    str(c["errors"]) + (f" ({c['error_samples'][0].split(':')[0]})" if c["errors"] else ""),
                    ratio,
                ]
            )
        first = group[0]
        out.append(
            f"{size}: {first['processes'] * first['threads']} callers, {first['runs']} run(s); "
            "issuances and Redis commands listed per run\n"
            + _table(
                ["design", "store", "issuances", "p50 ms", "p95 ms", "max ms", "redis cmds", "errors", "p95 x ours"],
                rows,
                right={3, 4, 5, 6, 7, 8},
            )
        )
        for mine in ours.values():
            anchors = [c for c in group if not c["kind"].startswith("ours") and c["family"] != "none"]
            if not anchors:
                continue
            bits = [f"{c['kind']} {_anchor_ratio(c, mine)}" for c in anchors]
            line = f"   {mine['kind']} vs anchors, follower p95 (anchor / ours): " + ", ".join(bits)
            if mine["family"] == "redis" and mine["redis_commands"]:
                own = max(mine["redis_commands"])
                cmd_bits = [
                    f"{c['kind']} {_ratio(max(c['redis_commands']), own)}" for c in anchors if c["redis_commands"]
                ]
                line += "\n   " + f"{mine['kind']} vs anchors, Redis commands (anchor / ours): " + ", ".join(cmd_bits)
            out.append(line)
    return "\n".join(out)


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _render_ratelimit(section: dict[str, Any]) -> str:
    from bench import ratelimit

    config = section.get("config", {})
    out = []
    fleet = section.get("fleet") or []
    if fleet:
        seconds = config.get("fleet_seconds")
        out.append(
            "\n   ".join(
                [
                    "5. Rate limits (issue 12): fleet floods, P x T callers quoting flat out for "
                    f"{seconds:g} s against a fake KIS",
                    f"that accepts {config.get('nominal_rate')} calls per app key in any sliding second (EGW00201 "
                    "above). accepted/s and EGW00201 are",
                    "the server's own counts over the window; budget = accepted/s of the nominal 20/s (ours spends at "
                    "most 92.5%:",
                    "a 7.5% safety margin); share dev = the process furthest from its fair share, relative to it;",
                    "call p50/p99 = one quote as its caller saw it (waits and retries included); wall = the flood with "
                    "start-up and tail.",
                    f"Baselines run on the file store. Targets, ours at {ratelimit.TARGET_SIZE} only: 0 EGW00201, "
                    f"0 errors, budget >= {ratelimit.BUDGET_USED_MIN * 100:.0f}%,",
                    f"share dev <= {ratelimit.SHARE_DEVIATION_MAX * 100:.0f}% ('-': no target for this row)",
                ]
            )
        )
        for size in dict.fromkeys(r["size"] for r in fleet):
            rows = []
            for r in (r for r in fleet if r["size"] == size):
                if "error" in r:
                    rows.append([r["label"], "-", "-", "-", "-", "-", "-", "-", "-", f"{r['wall_s']:.1f}", r["error"]])
                    continue
                rows.append(
                    [
                        r["label"],
                        r["backend"],
                        f"{r['accepted_per_second']:.1f}",
                        _pct(r["budget_used"]),
                        str(r["egw00201"]),
                        str(r["caller_errors"]),
                        f"{r['worst_share_deviation'] * 100:.0f}%",
                        _num(r["call_p50_ms"]),
                        _num(r["call_p99_ms"]),
                        f"{r['wall_s']:.1f}",
                        ratelimit.verdict(r),
                    ]
                )
            first = next(r for r in fleet if r["size"] == size)
            out.append(
                f"{size}: {first['processes'] * first['threads']} callers in {first['processes']} process(es)\n"
                + _table(
                    ["design", "store", "accepted/s", "budget", "EGW00201", "errors", "share dev"]
                    + ["call p50 ms", "call p99 ms", "wall s", "target"],
                    rows,
                    right=set(range(2, 10)),
                )
            )
    acquire = section.get("acquire") or []
    if acquire:
        rows = [
            [
                r["backend"],
                r["limiter"],
                str(r["n"]),
                f"{r['p50_us']:.1f}",
                f"{r['p99_us']:.1f}",
                f"{r['max_us']:.1f}",
                str(r["waited"]),
                f"{r['round_trips']:g}" if "round_trips" in r else "-",
                ratelimit.acquire_verdict(r),
            ]
            for r in acquire
        ]
        rate = config.get("acquire_rate", 0)
        out.append(
            "\n    ".join(
                [
                    f"5b. acquire() with no contention: one thread, a {rate:.0e}/s budget so no call waits ('waited' "
                    "counts any that did),",
                    f"{config.get('acquire_warmup')} warm-up calls first; round trips = Redis replies read per "
                    f"acquire. Targets: file p99 <= {ratelimit.FILE_P99_MAX_US:.0f} us;",
                    f"Redis {ratelimit.REDIS_ROUND_TRIPS:g} round trip and p99 <= {ratelimit.REDIS_P99_MAX_US:.0f} us "
                    "on loopback",
                ]
            )
            + "\n"
            + _table(
                ["backend", "limiter", "n", "p50 us", "p99 us", "max us", "waited", "round trips", "target"],
                rows,
                right={2, 3, 4, 5, 6, 7},
            )
        )
    return "\n\n".join(out)


def ratelimit_notes(section: dict[str, Any]) -> list[str]:
    """Why a rate-limit target was missed, what failed, and the comparison in one line."""
    if not section:
        return []
    from bench import ratelimit

    notes = []
    misses = missed(section.get("targets", []), "MISSED")
    if misses:
        notes.append(f"Rate-limit targets MISSED: {misses}.")
    fleet = section.get("fleet") or []
    for row in fleet:
        if "error" in row:
            notes.append(f"Flood {row['size']} {row['label']} did not run: {row['error']}")
            continue
        if row["label"] in ratelimit.OURS and (row["caller_errors"] or row["egw00201"]):
            samples = "; ".join(row.get("error_samples") or []) or "no samples"
            notes.append(
                f"Flood {row['size']} {row['label']}: {row['egw00201']} EGW00201, {row['caller_errors']} caller "
                f"errors ({row.get('missing_processes', 0)} processes never reported); samples: {samples}"
            )
        if row["label"] in ratelimit.OURS and row["budget_used"] < ratelimit.BUDGET_USED_MIN:
            notes.append(
                f"Flood {row['size']} {row['label']} spent {row['budget_used'] * 100:.1f}% of the budget: the "
                "limiter's own ceiling is 92.5% (18.5/s), so every slot the callers left unclaimed (a caller "
                "busy elsewhere when its slot came, on a loaded machine) comes off that margin."
            )
    target = [r for r in fleet if r["size"] == ratelimit.TARGET_SIZE and "error" not in r]
    if target:
        bits = [
            f"{r['label']} {r['accepted_per_second']:.1f}/s, {r['egw00201']} EGW00201, {r['caller_errors']} errors"
            for r in target
        ]
        notes.append(f"Rate limits at {ratelimit.TARGET_SIZE}: " + "; ".join(bits) + ".")
    redis_row = next((r for r in section.get("acquire") or [] if r["backend"] == "redis"), None)
    if redis_row and redis_row.get("server_commands_per_acquire"):
        per = ", ".join(f"{k} {v:g}" for k, v in redis_row["server_commands_per_acquire"].items())
        notes.append(
            f"A Redis acquire is one EVALSHA; the server ran, per acquire (INFO commandstats, the script's own "
            f"commands included): {per}."
        )
    for row in section.get("acquire") or []:
        if row.get("waited"):
            notes.append(f"acquire() {row['backend']}: {row['waited']} of {row['n']} calls waited for a slot.")
        if row.get("falling_back"):
            notes.append(f"acquire() {row['backend']}: the limiter fell back to its per-process share meanwhile.")
    return notes


# --------------------------------------------------------------------------- plot
def plot(result: dict[str, Any], path: str) -> None:
    """Follower wait (p50, p95, max) per design at 8x16 (or the largest size run), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result.get("stampede") or []
    sizes = [c["size"] for c in cells]
    size = TARGET_SIZE if TARGET_SIZE in sizes else (sizes[-1] if sizes else None)
    group = [c for c in cells if c["size"] == size]
    if not group:
        raise ValueError("no stampede rows to plot")

    def order(cell: dict[str, Any]) -> tuple[int, float]:
        rank = 0 if cell["kind"].startswith("ours") else 1 if cell["family"] == "none" else 2
        return rank, cell["follower_wait"]["p95_ms"]

    group.sort(key=order)
    labels = [f"{c['kind']}" for c in group]
    fig, ax = plt.subplots(figsize=(7.0, 3.4), dpi=90)
    ys = range(len(group))
    floor = 0.05
    for offset, key, colour in ((-0.25, "p50_ms", "#9ecae1"), (0.0, "p95_ms", "#3182bd"), (0.25, "max_ms", "#08519c")):
        values = [max(c["follower_wait"][key], floor) for c in group]
        ax.barh([y + offset for y in ys], values, height=0.25, color=colour, label=key.replace("_ms", ""))
    ax.set_xscale("log")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(5.0, color="#d62728", linestyle="--", linewidth=1)
    ax.text(5.0, -0.55, " 5 ms target", color="#d62728", fontsize=7, va="top")
    ax.set_xlabel("follower wait after the token was stored (ms, log scale)", fontsize=8)
    machine = result.get("machine", {})
    ax.set_title(
        f"Cold stampede {size}, {result['config']['issue_delay_s'] * 1000:.0f} ms issuance "
        f"({machine.get('nproc')} CPUs, {result['mode']} run)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper right")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
