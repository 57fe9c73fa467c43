"""Turning measurements into the table, the JSON document and the goal verdict.

With several rounds, each (target, in-flight) cell reports one of its rounds, the median or the
best by QPS, whole: its latencies and CPU belong to the same run as its QPS. A ratio is the median,
over rounds, of that round's QPS divided by bare-aio's QPS in the same round: the two were measured
back to back, so the machine's drift between rounds (often larger than the difference being
measured) cancels out. With one round it is simply the quotient of the two cells.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench import BARE_AIO, GOAL_IN_FLIGHT, GOAL_RATIO, LABELS, SERVICE, TARGETS

# Above this share of a core the load generator itself may be what limits a row.
CLIENT_BOUND = 0.90
# Above this share of a core, other processes competed with the benchmark for the 2 cores.
NOISY = 0.20


def pick(rounds: list[dict[str, Any]], how: str) -> dict[str, Any]:
    ordered = sorted(rounds, key=lambda m: m["qps"])
    return ordered[-1] if how == "best" else ordered[(len(ordered) - 1) // 2]


def summarize(measurements: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    """One row per (in-flight, target), in report order, with every round kept under `rounds`."""
    groups = sorted({(m.get("waiting", 0), m["in_flight"]) for m in measurements})
    rows = []
    for waiting, level in groups:
        chosen = {}
        for target in TARGETS:
            rounds = [
                m for m in measurements
                if m["target"] == target and m["in_flight"] == level and m.get("waiting", 0) == waiting
            ]
            if rounds:
                chosen[target] = (pick(rounds, how), rounds)
        base_rounds = {m["round"]: m["qps"] for m in chosen[BARE_AIO][1]} if BARE_AIO in chosen else {}
        for target, (best, rounds) in chosen.items():
            paired = sorted(m["qps"] / base_rounds[m["round"]] for m in rounds if m["round"] in base_rounds)
            ratio = None if target == BARE_AIO or not paired else statistics.median(paired)
            fields = {k: v for k, v in best.items() if k not in ("target", "in_flight", "waiting", "first_error")}
            rows.append(
                {
                    "target": target,
                    "label": LABELS[target] + (f" +{waiting} waiting" if waiting else ""),
                    "in_flight": level,
                    "waiting": waiting,
                    **fields,
                    "ratio_vs_bare_aio": ratio,
                    "rounds": rounds,
                }
            )
    return rows


def goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ratio = next(
        (
            r["ratio_vs_bare_aio"]
            for r in rows
            if r["target"] == SERVICE and r["in_flight"] == GOAL_IN_FLIGHT and not r["waiting"]
        ),
        None,
    )
    return {
        "statement": f"{LABELS[SERVICE]} at {GOAL_IN_FLIGHT} in flight >= {GOAL_RATIO} of bare-aio QPS",
        "in_flight": GOAL_IN_FLIGHT,
        "threshold": GOAL_RATIO,
        "ratio": ratio,
        "met": None if ratio is None else ratio >= GOAL_RATIO,
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def table(rows: list[dict[str, Any]], verdict: dict[str, Any], header: str) -> str:
    lines = [header, ""]
    columns = (
        f"{'target':<26}{'in-flight':>10}{'QPS':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU':>12}{'client CPU':>12}{'other CPU':>11}{'vs bare-aio':>13}"
    )
    lines.append(columns)
    lines.append("-" * len(columns))
    previous = None
    for row in rows:
        group = (row["waiting"], row["in_flight"])
        if previous is not None and group != previous:
            lines.append("")
        previous = group
        ratio = row["ratio_vs_bare_aio"]
        lines.append(
            f"{row['label']:<26}{row['in_flight']:>10}{row['qps']:>9.0f}{row['p50_ms']:>9.3f}"
            f"{row['p99_ms']:>9.3f}{_percent(row['server_cpu']):>12}{_percent(row['client_cpu']):>12}"
            f"{_percent(row['other_cpu']):>11}"
            f"{'' if ratio is None else f'{ratio:.2f}':>13}"
        )
    lines.append("")
    busy = sorted({r["in_flight"] for r in rows if r["client_cpu"] >= CLIENT_BOUND})
    if busy:
        levels = ", ".join(str(n) for n in busy)
        lines.append(
            f"note: the client used >= {CLIENT_BOUND:.0%} of a core at {levels} in flight; there it may be"
            " the limit, and ratios then understate the servers' difference."
        )
    noise = [r["other_cpu"] for r in rows if r["other_cpu"] is not None]
    if noise and max(noise) >= NOISY:
        lines.append(
            f"note: other processes used up to {max(noise):.0%} of a core during the measurements;"
            " numbers are noisy. Rerun on a quiet machine, or with --rounds 3."
        )
    if verdict["met"] is None:
        lines.append(f"goal {verdict['statement']}: not measured (no {GOAL_IN_FLIGHT} in --in-flight)")
    else:
        word = "MET" if verdict["met"] else "NOT MET"
        lines.append(f"goal {verdict['statement']}: {word} ({verdict['ratio']:.2f})")
    return "\n".join(lines)
