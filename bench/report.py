"""Turning measurements into the table, the JSON document and the goal verdict.

With several rounds, each (target, in-flight) cell reports one of its rounds, the median or the
best by QPS, whole: its latencies and CPU belong to the same run as its QPS. A ratio is the median,
over rounds, of that round's QPS divided by bare-aio's QPS in the same round: the two were measured
back to back, so the machine's drift between rounds (often larger than the difference being
measured) cancels out. With one round it is simply the quotient of the two cells. Ratios pair
rows of one suite only: the CheckSecret rows with the bare-aio rows sent CheckSecret-sized requests,
the ResolveSmtp rows with those sent ResolveSmtp-sized ones.

The TestSmtp phase (`bench.testsmtp`) has its own small table of latencies and no goal; the Vault
phase (`bench.cold`) has its own table and its own goal.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench import (
    BARE_AIO,
    CHECK_SECRET,
    GETSMTP_SUITE,
    LABELS,
    QPS_GOALS,
    RESOLVE_SMTP,
    SUITES,
    TARGETS,
    VAULT_GOAL_RATIO,
)

# Above this share of a core the load generator itself may be what limits a row.
CLIENT_BOUND = 0.90
# Above this share of a core, other processes competed with the benchmark for the 2 cores.
NOISY = 0.20


def pick(rounds: list[dict[str, Any]], how: str) -> dict[str, Any]:
    ordered = sorted(rounds, key=lambda m: m["qps"])
    return ordered[-1] if how == "best" else ordered[(len(ordered) - 1) // 2]


def summarize(measurements: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    """One row per (suite, in-flight, target), in report order, every round kept under `rounds`."""
    order = list(SUITES)
    groups = sorted(
        {(m.get("suite", GETSMTP_SUITE), m.get("waiting", 0), m["in_flight"]) for m in measurements},
        key=lambda g: (order.index(g[0]), g[1], g[2]),
    )
    rows = []
    for suite, waiting, level in groups:
        chosen = {}
        for target in TARGETS:
            rounds = [
                m for m in measurements
                if m["target"] == target and m["in_flight"] == level and m.get("waiting", 0) == waiting
                and m.get("suite", GETSMTP_SUITE) == suite
            ]
            if rounds:
                chosen[target] = (pick(rounds, how), rounds)
        base_rounds = {m["round"]: m["qps"] for m in chosen[BARE_AIO][1]} if BARE_AIO in chosen else {}
        for target, (best, rounds) in chosen.items():
            paired = sorted(m["qps"] / base_rounds[m["round"]] for m in rounds if m["round"] in base_rounds)
            ratio = None if target == BARE_AIO or not paired else statistics.median(paired)
            fields = {
                k: v for k, v in best.items() if k not in ("suite", "target", "in_flight", "waiting", "first_error")
            }
            rows.append(
                {
                    "suite": suite,
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


def goal(rows: list[dict[str, Any]], target: str, level: int, threshold: float) -> dict[str, Any]:
    """`target`'s ratio to bare-aio QPS at `level` in flight against its least acceptable value."""
    ratio = next(
        (
            r["ratio_vs_bare_aio"]
            for r in rows
            if r["target"] == target and r["in_flight"] == level and not r["waiting"]
        ),
        None,
    )
    return {
        "statement": f"{LABELS[target]} at {level} in flight >= {threshold} of bare-aio QPS",
        "in_flight": level,
        "threshold": threshold,
        "ratio": ratio,
        "met": None if ratio is None else ratio >= threshold,
    }


def vault_goal(vault: dict[str, Any] | None) -> dict[str, Any]:
    """Cold CheckSecret latency over a direct hvac read's (p50, paired rounds) against its limit."""
    ratio = None if vault is None else vault["ratio_service_to_direct"]
    return {
        "statement": f"cold Vault CheckSecret <= {VAULT_GOAL_RATIO}x a direct hvac read",
        "threshold": VAULT_GOAL_RATIO,
        "ratio": ratio,
        "met": None if ratio is None else ratio <= VAULT_GOAL_RATIO,
    }


def goals(rows: list[dict[str, Any]], vault: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every goal, GetSmtp's first."""
    return [goal(rows, *spec) for spec in QPS_GOALS] + [vault_goal(vault)]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def table(rows: list[dict[str, Any]], verdicts: list[dict[str, Any]], header: str,
          vault: dict[str, Any] | None = None, smtp: dict[str, Any] | None = None) -> str:
    lines = [header, ""]
    columns = (
        f"{'target':<26}{'in-flight':>10}{'QPS':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU':>12}{'client CPU':>12}{'other CPU':>11}{'vs bare-aio':>13}"
    )
    lines.append(columns)
    lines.append("-" * len(columns))
    previous = None
    for row in rows:
        group = (row["suite"], row["waiting"], row["in_flight"])
        if previous is not None and group != previous:
            lines.append("")
            if group[0] != previous[0]:
                lines.append(
                    f"{row['suite']}: bare-aio sent {row['response_size']}-byte requests, as long as"
                    f" {row['suite']}'s responses"
                )
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
    cached = _cached_shares(rows)
    if cached:
        lines.append(
            f"note: {LABELS[CHECK_SECRET]} replies that said Cached, over all rounds: {cached}; the others"
            " made or waited on a refresh (the file provider caches a value for 5 s)."
        )
    if any(r["target"] == RESOLVE_SMTP for r in rows):
        lines.append(
            f"note: {LABELS[RESOLVE_SMTP]} replies have no Cached field, so their cached share is not counted."
            " Its password comes from the same 5 s file cache as CheckSecret's, with the same timing: the"
            " refresh normally happens in the warm-up and the counted replies are cache hits."
        )
    if smtp is not None:
        lines += ["", *_smtp_table(smtp)]
    if vault is not None:
        lines += ["", *_vault_table(vault)]
    lines.append("")
    for verdict in verdicts:
        if verdict["met"] is None:
            why = f"no {verdict['in_flight']} in --in-flight" if "in_flight" in verdict else "--skip-vault"
            lines.append(f"goal {verdict['statement']}: not measured ({why})")
        else:
            word = "MET" if verdict["met"] else "NOT MET"
            lines.append(f"goal {verdict['statement']}: {word} ({verdict['ratio']:.2f})")
    return "\n".join(lines)


def _cached_shares(rows: list[dict[str, Any]]) -> str:
    """"99.99% at 1 (1 of 9000 not)" and so on, over every round of the CheckSecret rows."""
    shares = []
    for row in rows:
        if row["target"] == CHECK_SECRET:
            calls = sum(m["calls"] for m in row["rounds"])
            cached = sum(m["cached"] or 0 for m in row["rounds"])
            shares.append(f"{cached / calls:.2%} at {row['in_flight']} ({calls - cached} of {calls} not)")
    return ", ".join(shares)


def _latency_rows(title: str, sides: tuple[tuple[str, dict[str, Any], str], ...]) -> list[str]:
    columns = f"{title:<30}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'vs direct':>11}"
    lines = [columns, "-" * len(columns)]
    for label, side, ratio in sides:
        lines.append(
            f"{label:<30}{side['calls']:>7}{side['p50_ms']:>9.3f}{side['p99_ms']:>9.3f}"
            f"{side['mean_ms']:>9.3f}{ratio:>11}"
        )
    return lines


def _smtp_table(smtp: dict[str, Any]) -> list[str]:
    lines = _latency_rows("SMTP exchange, 1 in flight", (
        ("direct smtplib exchange", smtp["direct"], ""),
        ("TestSmtp (v2, stored profile)", smtp["service"], f"{smtp['ratio_service_to_direct']:.2f}"),
    ))
    lines.append(
        "localhost, STARTTLS with a bench CA, AUTH PLAIN, one small message, QUIT; a new connection per"
        f" exchange, calls alternating over {len(smtp['rounds'])} rounds; every TestSmtp reply said success."
        f" p50 of the sum of the replies' own step durations (resolve to send, no QUIT):"
        f" {smtp['service']['steps_p50_ms']:.3f} ms."
    )
    return lines


def _vault_table(vault: dict[str, Any]) -> list[str]:
    lines = _latency_rows("cold Vault read, 1 in flight", (
        ("direct hvac read", vault["direct"], ""),
        ("CheckSecret (Vault, cold)", vault["service"], f"{vault['ratio_service_to_direct']:.2f}"),
    ))
    lines.append(
        f"OpenBao dev server, KV v2, {vault['secrets']} distinct secrets, half each way, calls alternating over"
        f" {len(vault['rounds'])} rounds; every CheckSecret reply said Cached false. p50 of the replies' own"
        f" Latency (resolution in the service: thread pool and hvac): {vault['service']['resolve_p50_ms']:.3f} ms."
    )
    return lines
