"""Turning measurements into the table, the JSON document and the goal verdict.

With several rounds, each (target, in-flight) cell reports one of its rounds, the median or the
best by QPS, whole: its latencies and CPU belong to the same run as its QPS. A ratio is the median,
over rounds, of that round's QPS divided by bare-aio's QPS in the same round: the two were measured
back to back, so the machine's drift between rounds (often larger than the difference being
measured) cancels out. With one round it is simply the quotient of the two cells. Ratios pair
rows of one suite only: the CheckSecret rows with the bare-aio rows sent CheckSecret-sized requests,
the ResolveSmtp rows with those sent ResolveSmtp-sized ones. The GetSmtp services over TLS have a
second ratio, to the bare-aio server over the same credentials (`BASELINES`), paired the same way;
`transport_ratios` lists the service/bare pairs the TLS question asks about, QPS and p99 each.

`resident_memory` turns what was read from /proc into the resident-memory table: idle after start
and seeding, the highest sample under the GetSmtp load at the highest in-flight level, and what
the process held right after it and at its peak.

The TestSmtp phase (`bench.testsmtp`) and the Vault phase (`bench.cold`) each have their own
table and their own goal.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench import (
    BARE_AIO,
    BARE_AIO_MTLS,
    BARE_AIO_TLS,
    BASELINES,
    CHECK_SECRET,
    EDGE_GOAL_RATIO,
    EDGE_IN_FLIGHT,
    EDGE_LATENCY_GOAL_RATIO,
    FLOORS,
    GETSMTP_SUITE,
    LABELS,
    MEMORY_GOAL_MIB,
    QPS_GOALS,
    RESOLVE_SMTP,
    SERVICE,
    SERVICE_MTLS,
    SERVICE_TLS,
    SMTP_GOAL_RATIO,
    SUITES,
    TARGETS,
    VAULT_GOAL_RATIO,
    VAULT_RESOLVE_GOAL_RATIO,
    WORKERS_GOAL_RATIO,
    WORKERS_IN_FLIGHT,
)
from bench.load import RSS_INTERVAL

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
        for target, (best, rounds) in chosen.items():
            each = [] if target == BARE_AIO else _paired_ratios(rounds, chosen.get(BARE_AIO, (None, []))[1], "qps")
            ratio = statistics.median(each) if each else None
            baseline = BASELINES.get(target)
            own = _paired(rounds, chosen[baseline][1], "qps") if baseline in chosen else None
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
                    # Each round's ratio (the median of which is the one above), in round order.
                    "round_ratios_vs_bare_aio": each,
                    # Over TLS: the QPS ratio to the bare-aio server with the same credentials.
                    "baseline": baseline if own is not None else None,
                    "ratio_vs_baseline": own,
                    "rounds": rounds,
                }
            )
    return rows


def _paired(rounds: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> float | None:
    """Median over rounds of `key` in a round over `key` of the base in the same round."""
    ratios = _paired_ratios(rounds, base, key)
    return statistics.median(ratios) if ratios else None


def _paired_ratios(rounds: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> list[float]:
    """`key` in each round over `key` of the base in the same round, in round order."""
    by_round = {m["round"]: m[key] for m in base}
    return [m[key] / by_round[m["round"]] for m in sorted(rounds, key=lambda m: m["round"]) if by_round.get(m["round"])]


# The service/bare comparisons of GetSmtp across transports, as (what, numerator, denominator).
TRANSPORT_RATIOS = (
    ("token, plaintext / bare-aio plaintext", SERVICE, BARE_AIO),
    ("TLS+token / bare-aio TLS", SERVICE_TLS, BARE_AIO_TLS),
    ("mTLS / bare-aio mTLS", SERVICE_MTLS, BARE_AIO_MTLS),
    ("mTLS / bare-aio plaintext", SERVICE_MTLS, BARE_AIO),
    ("TLS+token / bare-aio plaintext", SERVICE_TLS, BARE_AIO),
    ("bare-aio TLS / bare-aio plaintext", BARE_AIO_TLS, BARE_AIO),
    ("bare-aio mTLS / bare-aio plaintext", BARE_AIO_MTLS, BARE_AIO),
)


def transport_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each TRANSPORT_RATIOS pair at each in-flight level where both were measured: the QPS ratio
    and the p99 ratio (above 1.00: the numerator's p99 is longer), each the median of paired rounds."""
    cells = {(r["target"], r["in_flight"]): r for r in rows if r["suite"] == GETSMTP_SUITE and not r["waiting"]}
    found = []
    for what, target, base in TRANSPORT_RATIOS:
        for level in sorted({level for _, level in cells}):
            if (target, level) in cells and (base, level) in cells:
                mine, theirs = cells[target, level]["rounds"], cells[base, level]["rounds"]
                found.append({
                    "statement": what, "target": target, "baseline": base, "in_flight": level,
                    "qps_ratio": _paired(mine, theirs, "qps"), "p99_ratio": _paired(mine, theirs, "p99_ms"),
                })
    return found


def resident_memory(rows: list[dict[str, Any]], reads: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Resident memory of each GetSmtp target's process, in MiB. `reads` holds, by target, what the
    parent read from /proc: `idle` (after start and seeding) and `after` (right after its last
    GetSmtp measurement at its highest in-flight level); the load maximum comes from the rows at
    that level."""
    found = []
    for target in TARGETS:
        if target not in reads:
            continue
        measured = [r for r in rows if r["suite"] == GETSMTP_SUITE and r["target"] == target and not r["waiting"]]
        level = max((r["in_flight"] for r in measured), default=None)
        row = next((r for r in measured if r["in_flight"] == level), None)
        samples = [m["server_rss_max_mib"] for m in row["rounds"] if m.get("server_rss_max_mib")] if row else []
        idle, after = reads[target].get("idle"), reads[target].get("after")
        found.append({
            "target": target,
            "label": LABELS[target],
            "in_flight": level,
            "idle_rss_mib": idle and idle["rss_mib"],
            "idle_hwm_mib": idle and idle["hwm_mib"],
            "load_rss_max_mib": max(samples) if samples else None,
            "after_rss_mib": after and after["rss_mib"],
            "peak_hwm_mib": after and after["hwm_mib"],
        })
    return found


def goal(rows: list[dict[str, Any]], target: str, level: int, threshold: float) -> dict[str, Any]:
    """`target`'s ratio to bare-aio QPS at `level` in flight against its least acceptable value,
    with each round's ratio (`rounds`): on a noisy machine the verdict of the median alone can
    flip from one run to the next. For a method measured next to its floor (`FLOORS`: the echo
    that makes the guard's checks, and for an audited method writes the record, with no method),
    also the floor's ratio to bare-aio (`floor`), the method's to the floor (`to_floor`), each the
    median of paired rounds, and the floor's label (`floor_label`)."""
    def found(name: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["target"] == name and r["in_flight"] == level and not r["waiting"]), None)

    row = found(target)
    ratio = None if row is None else row["ratio_vs_bare_aio"]
    verdict = {
        "statement": f"{LABELS[target]} at {level} in flight >= {threshold} of bare-aio QPS",
        "in_flight": level,
        "threshold": threshold,
        "ratio": ratio,
        "met": None if ratio is None else ratio >= threshold,
        "rounds": [] if row is None else row["round_ratios_vs_bare_aio"],
    }
    floor = found(FLOORS[target]) if target in FLOORS else None
    if row is not None and floor is not None:
        verdict["floor"] = floor["ratio_vs_bare_aio"]
        verdict["to_floor"] = _paired(row["rounds"], floor["rounds"], "qps")
        verdict["floor_label"] = floor["label"]
    return verdict


def vault_goals(vault: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The Vault phase's two goals (p50s at 1 in flight, median of the rounds' ratios): warm
    ResolveSmtp over a direct hvac read's, and cold CheckSecret over a bare-aio echo's plus a direct
    hvac read's. The first carries its floor (`floor`): a bare-aio echo's p50 over the direct read's,
    a grpcio round trip with nothing behind it."""
    warm = None if vault is None else vault["ratio_resolve_to_direct"]
    cold = None if vault is None else vault["ratio_service_to_echo_and_direct"]
    resolve = {
        "statement": f"warm ResolveSmtp (Vault password) p50 at 1 in flight < {VAULT_RESOLVE_GOAL_RATIO}x"
                     " a direct hvac read",
        "threshold": VAULT_RESOLVE_GOAL_RATIO, "ratio": warm,
        "met": None if warm is None else warm < VAULT_RESOLVE_GOAL_RATIO,
    }
    if vault is not None and "ratio_echo_to_direct" in vault:
        resolve["floor"] = vault["ratio_echo_to_direct"]  # a bare-aio round trip alone
    return [
        resolve,
        {
            "statement": f"cold Vault CheckSecret p50 <= {VAULT_GOAL_RATIO}x (bare-aio echo + direct hvac read)",
            "threshold": VAULT_GOAL_RATIO, "ratio": cold,
            "met": None if cold is None else cold <= VAULT_GOAL_RATIO,
        },
    ]


def smtp_goal(smtp: dict[str, Any] | None) -> dict[str, Any]:
    """TestSmtp's p50 over the direct smtplib exchange's (paired rounds) against its limit."""
    ratio = None if smtp is None else smtp["ratio_service_to_direct"]
    return {
        "statement": f"TestSmtp p50 <= {SMTP_GOAL_RATIO}x the same exchange done with smtplib",
        "threshold": SMTP_GOAL_RATIO,
        "ratio": ratio,
        "met": None if ratio is None else ratio <= SMTP_GOAL_RATIO,
    }


def edge_goals(edge: dict[str, Any] | None, in_flight: int) -> list[dict[str, Any]]:
    """The edge phase's two goals: QPS through the edge over bare-aio's, both on Unix sockets, at
    `in_flight`; and the edge's p50 at 1 in flight over a direct hvac read's. The first carries the
    floor of its ratio when it was measured, as the audited QPS goals do (`goal`); the second its
    own floor, bare-aio's p50 on its Unix socket over the direct read's."""
    if edge is not None:
        in_flight = edge["in_flight"]
    qps = None if edge is None else edge["qps_ratio"]
    latency = None if edge is None else edge["latency_ratio"]
    throughput = {
        "statement": f"ResolveSmtp via edge (Unix socket) at {in_flight} in flight >= {EDGE_GOAL_RATIO}"
                     " of bare-aio (Unix socket) QPS",
        "threshold": EDGE_GOAL_RATIO, "ratio": qps, "met": None if qps is None else qps >= EDGE_GOAL_RATIO,
    }
    if edge is not None and "floor_ratio" in edge:
        throughput.update(floor=edge["floor_ratio"], to_floor=edge["to_floor"], floor_label=LABELS[FLOORS[RESOLVE_SMTP]])
    one = {
        "statement": f"ResolveSmtp via edge p50 at 1 in flight < {EDGE_LATENCY_GOAL_RATIO}x a direct hvac read",
        "threshold": EDGE_LATENCY_GOAL_RATIO, "ratio": latency,
        "met": None if latency is None else latency < EDGE_LATENCY_GOAL_RATIO,
    }
    if edge is not None:
        one["floor"] = edge["bare_latency_ratio"]  # bare-aio's own round trip on its Unix socket
    return [throughput, one]


def workers_goal(workers: dict[str, Any] | None, in_flight: int = WORKERS_IN_FLIGHT) -> dict[str, Any]:
    """GetSmtp QPS of two worker processes over one process's (median of paired rounds)."""
    if workers is not None:
        in_flight = workers["in_flight"]
    ratio = None if workers is None else workers["ratio"]
    verdict = {
        "statement": f"GetSmtp QPS with workers = 2 at {in_flight} in flight >= {WORKERS_GOAL_RATIO} of workers = 1",
        "threshold": WORKERS_GOAL_RATIO, "ratio": ratio, "met": None if ratio is None else ratio >= WORKERS_GOAL_RATIO,
    }
    one = None if workers is None else workers["workers_1"]
    if one is not None and one.get("server_cpu"):
        # At one process's CPU per call the machine's cores answer at most this many times its QPS,
        # however many processes serve and with none left for the load.
        verdict["ceiling"], verdict["cpus"] = workers["cpus"] / one["server_cpu"], workers["cpus"]
    return verdict


def memory_goal(resident: list[dict[str, Any]], workers: dict[str, Any] | None) -> dict[str, Any]:
    """The most any serving process held idle after start: the plaintext service's, and, from the
    workers phase, each worker's (VmRSS, MiB; `ratio` holds it)."""
    idle = [m["idle_rss_mib"] for m in resident if m["target"] == SERVICE and m["idle_rss_mib"] is not None]
    if workers is not None:
        for count in workers["memory_idle"].values():
            idle += [v for v in (count.get("workers") or [count.get("process")]) if v is not None]
    most = max(idle) if idle else None
    return {
        "statement": f"idle resident memory of each serving process <= {MEMORY_GOAL_MIB:g} MiB",
        "threshold": MEMORY_GOAL_MIB, "ratio": most, "met": None if most is None else most <= MEMORY_GOAL_MIB,
    }


def goals(rows: list[dict[str, Any]], vault: dict[str, Any] | None,
          edge: dict[str, Any] | None = None, edge_in_flight: int = EDGE_IN_FLIGHT,
          smtp: dict[str, Any] | None = None, workers: dict[str, Any] | None = None,
          resident: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every goal, GetSmtp's first, then the edge's, memory, the workers', TestSmtp's, and the two
    Vault ones, the cold one last."""
    return ([goal(rows, *spec) for spec in QPS_GOALS] + edge_goals(edge, edge_in_flight)
            + [memory_goal(resident or [], workers), workers_goal(workers), smtp_goal(smtp)] + vault_goals(vault))


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def table(rows: list[dict[str, Any]], verdicts: list[dict[str, Any]], header: str,
          vault: dict[str, Any] | None = None, smtp: dict[str, Any] | None = None,
          ratios: list[dict[str, Any]] | None = None, resident: list[dict[str, Any]] | None = None,
          edge: dict[str, Any] | None = None, workers: dict[str, Any] | None = None) -> str:
    lines = [header, ""]
    own = any(r["ratio_vs_baseline"] is not None for r in rows)
    columns = (
        f"{'target':<26}{'in-flight':>10}{'QPS':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU':>12}{'client CPU':>12}{'other CPU':>11}{'vs bare-aio':>13}"
        + (f"{'vs same-TLS bare':>18}" if own else "")
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
            + (f"{_ratio(row['ratio_vs_baseline']):>18}" if own else "")
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
    if any(r["target"] in FLOORS.values() for r in rows):
        lines.append(
            "note: the checks echoes (bench.stages.CheckedEcho) are sent the suite's own requests and answer the"
            " service's own answer: each checks the token, permission, slots, default deadline and request and"
            " counts the call, with no method; for the audited CheckSecret and ResolveSmtp it also appends one"
            " chained audit line (checks+record). Each is the floor under its suite's service row, measured at"
            " the highest in-flight level only."
        )
    if own:
        lines.append(
            "note: 'vs same-TLS bare' divides a TLS row's QPS by that of bare-aio over the same credentials"
            " (server TLS, or mTLS): TLS is in both, the rest is the service and its authentication."
            " On the bare-aio TLS and mTLS rows, 'vs bare-aio' is what TLS itself costs."
        )
    spent = _cpu_table(rows)
    if spent:
        lines += ["", *spent]
    if ratios:
        lines += ["", *_ratio_table(ratios)]
    if resident:
        lines += ["", *_memory_table(resident)]
    if smtp is not None:
        lines += ["", *_smtp_table(smtp)]
    if vault is not None:
        lines += ["", *_vault_table(vault)]
    if edge is not None:
        lines += ["", *_edge_table(edge)]
    if workers is not None:
        lines += ["", *_workers_table(workers)]
    lines += ["", *_goal_lines(verdicts)]
    return "\n".join(lines)


def _goal_lines(verdicts: list[dict[str, Any]]) -> list[str]:
    """One line per goal: met or not and the measured value, with the spread of the rounds where
    the goal has them; or why it was not measured."""
    lines = []
    for verdict in verdicts:
        if verdict["met"] is None:
            if "in_flight" in verdict:
                why = f"no {verdict['in_flight']} in --in-flight"
            elif verdict["statement"].startswith("ResolveSmtp via edge"):
                why = "--skip-vault or --skip-edge"
            elif verdict["statement"].startswith("TestSmtp"):
                why = "--skip-smtp"
            elif verdict["statement"].startswith("GetSmtp QPS with workers"):
                why = "--skip-workers"
            elif verdict["statement"].startswith("idle resident memory"):
                why = "no memory read"
            else:
                why = "--skip-vault"
            lines.append(f"goal {verdict['statement']}: not measured ({why})")
        else:
            word = "MET" if verdict["met"] else "NOT MET"
            unit = " MiB" if verdict["statement"].startswith("idle resident memory") else ""
            each = verdict.get("rounds") or []
            spread = ""
            if len(each) > 1:
                above = sum(r >= verdict["threshold"] for r in each)
                spread = (f"; rounds {min(each):.2f}-{max(each):.2f},"
                          f" {above} of {len(each)} at or above {verdict['threshold']}")
            floor = ""
            if verdict.get("floor") is not None and verdict.get("to_floor") is not None:
                floor = (f"; {verdict.get('floor_label', 'its floor')}: {verdict['floor']:.2f} of bare-aio,"
                         f" this {verdict['to_floor']:.2f} of it")
            elif verdict.get("floor") is not None:
                floor = f"; a bare-aio round trip alone: {verdict['floor']:.2f}"
            elif verdict.get("ceiling") is not None:
                floor = (f"; at one process's CPU per call {verdict['cpus']} cores answer at most"
                         f" {verdict['ceiling']:.2f}x its QPS")
            lines.append(f"goal {verdict['statement']}: {word} ({verdict['ratio']:.2f}{unit}{spread}){floor}")
    return lines


# The plaintext grpc.aio rows whose CPU per call the report splits by thread.
_SPLIT = (BARE_AIO, SERVICE, CHECK_SECRET, RESOLVE_SMTP, *FLOORS.values())


def _cpu_table(rows: list[dict[str, Any]]) -> list[str]:
    """CPU per call at the highest in-flight level, split into the server's event-loop thread
    (where every call's Python runs, grpcio's included), grpcio's other threads, and the load
    generator: where a QPS ratio at that level comes from, since the client and the server share
    the machine's cores."""
    split = [r for r in rows if r["target"] in _SPLIT and r.get("server_loop_cpu") is not None and r["qps"]]
    if not split:
        return []
    level = max(r["in_flight"] for r in split)
    lines = [
        f"CPU per call at {level} in flight (µs): the server's event-loop thread, its other threads, and the"
        " load generator",
        f"{'suite':<13}{'target':<22}{'server':>9}{'loop':>9}{'others':>9}{'client':>9}",
    ]
    for row in split:
        if row["in_flight"] != level:
            continue
        per_call = 1e6 / row["qps"]
        loop = row["server_loop_cpu"] * per_call
        server = row["server_cpu"] * per_call
        lines.append(
            f"{row['suite']:<13}{row['label']:<22}{server:>9.0f}{loop:>9.0f}{server - loop:>9.0f}"
            f"{row['client_cpu'] * per_call:>9.0f}"
        )
    return lines


def _ratio_table(ratios: list[dict[str, Any]]) -> list[str]:
    """QPS and p99 ratios of each pair, one column per in-flight level."""
    levels = sorted({r["in_flight"] for r in ratios})
    by = {(r["statement"], r["in_flight"]): r for r in ratios}
    width = max(7 * len(levels), 10)
    head = f"{'GetSmtp: service / bare':<40}{'QPS ratio':>{width}}   {'p99 ratio':>{width}}"
    sub = f"{'(median of paired rounds; in flight)':<40}" + "".join(f"{n:>7}" for n in levels) + "   " + "".join(
        f"{n:>7}" for n in levels)
    lines = [head, sub, "-" * len(sub)]

    def cell(statement: str, level: int, key: str) -> str:
        value = by.get((statement, level), {}).get(key)
        return f"{'-' if value is None else f'{value:.2f}':>7}"

    for statement in dict.fromkeys(r["statement"] for r in ratios):
        lines.append(
            f"{statement:<40}" + "".join(cell(statement, n, "qps_ratio") for n in levels) + "   "
            + "".join(cell(statement, n, "p99_ratio") for n in levels)
        )
    lines.append(
        "QPS ratio below 1.00: the first answered fewer calls per second; p99 ratio above 1.00: its p99 was"
        " longer. A service and its same-transport bare-aio are measured in one block, back to back; pairs"
        " across transports (bare-aio plaintext against a TLS row) are further apart in each round."
    )
    return lines


def _memory_table(resident: list[dict[str, Any]]) -> list[str]:
    def mib(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    columns = (
        f"{'resident memory, MiB':<26}{'idle':>10}{'in-flight':>11}{'load max':>10}{'after load':>12}{'peak (HWM)':>12}"
    )
    lines = [columns, "-" * len(columns)]
    for row in resident:
        lines.append(
            f"{row['label']:<26}{mib(row['idle_rss_mib']):>10}{row['in_flight'] or '-':>11}"
            f"{mib(row['load_rss_max_mib']):>10}{mib(row['after_rss_mib']):>12}{mib(row['peak_hwm_mib']):>12}"
        )
    lines.append(
        "VmRSS from /proc/<pid>/status. idle: after start and seeding, before any measurement; load max: the"
        f" highest of samples every {RSS_INTERVAL * 1000:.0f} ms during the GetSmtp measurements at the"
        " in-flight level shown, the highest measured (warm-up and window, every round); after load: right"
        " after the last of them; peak: VmHWM then, the most the process ever held. The plaintext service"
        " also answers the CheckSecret suite and bare-aio every suite's echo, so their peaks include those"
        " loads too."
    )
    return lines


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
        f" TestSmtp answers before its QUIT. p50 of the sum of the replies' own step durations (resolve to send):"
        f" {smtp['service']['steps_p50_ms']:.3f} ms."
    )
    return lines


def _vault_table(vault: dict[str, Any]) -> list[str]:
    lines = _latency_rows("Vault phase, 1 in flight", (
        ("direct hvac read", vault["direct"], ""),
        (f"bare-aio echo ({vault['echo']['bytes']} bytes)", vault["echo"], ""),
        ("CheckSecret (Vault, cold)", vault["service"], f"{vault['ratio_service_to_direct']:.2f}"),
        ("ResolveSmtp (Vault, warm)", vault["resolve_smtp"], f"{vault['ratio_resolve_to_direct']:.2f}"),
    ))
    lines.append(
        f"OpenBao dev server, KV v2, {vault['secrets']} distinct secrets, half read directly and half through"
        f" CheckSecret (each a cache miss: every reply said Cached false), the four paths taking turns call by call"
        f" over {len(vault['rounds'])} rounds; ResolveSmtp's profile references one more secret, cached."
        f" Cold CheckSecret over (echo + direct), median of the rounds' p50 ratios:"
        f" {vault['ratio_service_to_echo_and_direct']:.2f}. p50 of the CheckSecret replies' own Latency"
        f" (the resolution in the service, the provider's read included): {vault['service']['resolve_p50_ms']:.3f} ms."
    )
    return lines


def _workers_table(workers: dict[str, Any]) -> list[str]:
    """Both services' medians, the ratio, and what the CPU per call allows on this machine."""
    if workers.get("load") == "h2load":
        title = f"GetSmtp with every core (h2load, {workers['connections']} connections)"
    else:
        title = (f"GetSmtp with every core ({workers['generators']} load generators x"
                 f" {workers['channels_per_generator']} connections)")
    columns = (
        f"{title:<58}{'in-flight':>10}{'QPS':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU':>12}{'client CPU':>12}{'other CPU':>11}{'server us/call':>16}{'client us/call':>16}"
    )
    lines = [columns, "-" * len(columns)]
    for count in (2, 1):
        row = workers[f"workers_{count}"]
        lines.append(
            f"{f'smtpconfig serve --workers {count}':<58}{workers['in_flight']:>10}{row['qps']:>9.0f}"
            f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{_percent(row['server_cpu']):>12}"
            f"{_percent(row['client_cpu']):>12}{_percent(row['other_cpu']):>11}"
            f"{row['server_us_per_call']:>16.0f}{row['client_us_per_call']:>16.0f}"
        )
    one, two = workers["workers_1"], workers["workers_2"]
    ratio = workers["ratio"]
    lines.append(f"QPS ratio workers = 2 / workers = 1 (median of paired rounds): {_ratio(ratio) or '-'}")
    per_call = two["server_us_per_call"] + two["client_us_per_call"]
    if per_call > 0 and one["qps"] > 0:
        ceiling = workers["cpus"] * 1e6 / per_call
        lines.append(
            f"note: {workers['cpus']} cores / ({two['server_us_per_call']:.0f} us server + {two['client_us_per_call']:.0f} us"
            f" client CPU per call) = at most {ceiling:.0f} QPS with client and server on this machine, i.e."
            f" {ceiling / one['qps']:.2f}x workers = 1 here; the load generators' CPU is the machine's too."
        )
    if one["server_cpu"]:
        lines.append(
            f"note: one process used {one['server_cpu']:.2f} cores (its event loop and grpcio's threads): at its"
            f" CPU per call, {workers['cpus']} cores answer at most {workers['cpus'] / one['server_cpu']:.2f}x its"
            " QPS however many processes serve, and that with no CPU left for the load"
        )
    splits = [row["process_cpu"][1:] for row in workers.get("rounds", ()) if row["workers"] == 2 and row.get("process_cpu")]
    if splits:
        shown = ", ".join(" + ".join(_percent(cpu) for cpu in split) for split in splits)
        lines.append(f"note: each worker's CPU in the workers = 2 rounds (connections are shared out by the kernel): {shown}")
    if workers.get("starved_windows"):
        lines.append(
            f"note: in {workers['starved_windows']} window(s) one load generator had no call end inside it: the"
            " server answered the other generator's connections meanwhile (the QPS counts every call that"
            " ended in the window; p50 and p99 are of the generators that had some)."
        )
    return lines


def _edge_table(edge: dict[str, Any]) -> list[str]:
    columns = (
        f"{'edge phase (Unix sockets)':<38}{'in-flight':>10}{'QPS':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU':>12}{'ratio':>8}"
    )
    lines = [columns, "-" * len(columns)]
    level = edge["in_flight"]
    for label, row, n, ratio in (
        ("bare-aio (Unix socket)", edge["bare_aio"], level, ""),
        ("ResolveSmtp via edge, warm", edge["edge"], level, f"{edge['qps_ratio']:.2f}"),
        *(((LABELS[FLOORS[RESOLVE_SMTP]], edge["floor"], level, f"{edge['floor_ratio']:.2f}"),) if "floor" in edge else ()),
        ("bare-aio (Unix socket)", edge["bare_aio_1"], 1, ""),
        ("ResolveSmtp via edge, warm", edge["edge_1"], 1, ""),
    ):
        lines.append(f"{label:<38}{n:>10}{row['qps']:>9.0f}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
                     f"{_percent(row['server_cpu']):>12}{ratio:>8}")
    direct = edge["direct"]
    lines.append(f"{'direct hvac read (same secret)':<38}{1:>10}{'':>9}{direct['p50_ms']:>9.3f}{direct['p99_ms']:>9.3f}"
                 f"{'':>12}{'':>8}")
    lines.append(
        f"The central (the plaintext service) resolves the password from OpenBao; the edge follows it over TCP and"
        f" caches its answer for the cache_for it gives. QPS ratio: median over rounds of edge over bare-aio;"
        f" p50 ratio: median over rounds of the edge's p50 at 1 in flight over the direct reads' p50"
        f" ({edge['latency_ratio']:.2f}); bare-aio's own p50 at 1 in flight is {edge['bare_latency_ratio']:.2f} of"
        f" the direct reads', the least any server behind grpcio could reach on this socket."
        f" bare-aio echoed {edge['response_bytes']} bytes, the edge's reply size."
        + (f" The checks+record echo (on its own Unix socket) answers the edge's own reply after every check of"
           f" the edge's guard and one audit line, with no method; the edge reached {edge['to_floor']:.2f} of its QPS."
           if "floor" in edge else "")
    )
    return lines
