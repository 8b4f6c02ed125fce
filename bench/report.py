#!/usr/bin/env python3
"""Turns the benchmark's results (JSONL, one loadgen run a line, written by
bench/run.sh) into bench/RESULTS.md: per case and server the median and
min-max of the case's main number, and switchboard's ratios to the ceiling
and to the peers, each with the project's target and whether it is met.

Standard library only.

    python3 bench/report.py --results bench/results.jsonl --out bench/RESULTS.md \
        [--command "bench/run.sh"] [--notes notes.txt] [--settings "..."]
"""

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys

MIB = 1024 * 1024

# kind -> (main field, unit, higher is better)
METRIC = {
    "echo": ("mb_per_sec", "MB/s", True),
    "connect": ("conns_per_sec", "conn/s", True),
    "lines": ("msgs_per_sec", "msg/s", True),
    "download": ("mb_per_sec", "MB/s", True),
    "tar": ("mb_per_sec", "MB/s", True),
    "hold": ("bytes_per_connection", "B/conn", False),
    "hold-http": ("bytes_per_connection", "B/conn", False),
    "requests": ("reqs_per_sec", "req/s", True),
    "wrk": ("reqs_per_sec", "req/s", True),
    "datagrams": ("datagrams_per_sec", "datagram/s", True),
    "tls-handshake": ("handshakes_per_sec", "handshake/s", True),
    "tls-requests": ("reqs_per_sec", "req/s", True),
    "tls-download": ("mb_per_sec", "MB/s", True),
    "tls-hold": ("bytes_per_connection", "B/conn", False),
}

# kind -> other fields shown (medians)
EXTRA = {
    "requests": ["p50_us", "p99_us"],
    "connect": ["p50_us", "p99_us"],
    "lines": ["p50_us", "p99_us"],
    "datagrams": ["p50_us", "p99_us", "lost"],
    "download": ["rss_max_bytes"],
    "tar": ["rss_max_bytes"],
    "hold": ["connections_opened", "answered", "rss_before_bytes", "rss_idle_bytes"],
    "hold-http": ["connections_opened", "answered", "rss_before_bytes", "rss_idle_bytes"],
    "wrk": ["mb_per_sec", "p50_us", "p99_us", "client_busy"],
    "tls-handshake": ["p50_us", "p99_us", "client_busy"],
    "tls-requests": ["p50_us", "p99_us", "client_busy"],
    "tls-download": ["rss_max_bytes", "client_busy"],
    "tls-hold": ["connections_opened", "answered", "rss_before_bytes", "rss_idle_bytes"],
}

# kind -> [(the server switchboard is divided by, target ratio or None)]
RATIO_TARGETS = {
    "echo": [("ceiling", 0.95), ("socat", 5.0), ("socat-nodelay", 5.0), ("ncat", 5.0)],
    "connect": [("ceiling", 0.8), ("socat", None), ("ncat", None)],
    "lines": [("ceiling", 0.7)],
    "download": [("ceiling", 0.95)],
    "requests": [("nginx", 1.0)],
    "wrk": [("nginx", 1.0)],
    "hold-http": [("nginx", None)],
    "datagrams": [("ceiling", 0.9)],
    "tls-handshake": [("nginx", 1.0)],
    "tls-requests": [("nginx", 1.0)],
    "tls-download": [("nginx", 0.9)],
    # Reported beside nginx's, no target (lower is better).
    "tls-hold": [("nginx", None)],
}

# switchboard listeners measured against switchboard itself, not against
# the ceiling and the peers: one that refuses everyone, one behind a PROXY
# protocol v2 header, HTTP downloads, the random-bot with its history in
# SQLite and in Redis.
SAME_SERVER_VARIANTS = (
    "switchboard:refused",
    "switchboard:proxy-v2",
    "switchboard:http",
    "switchboard:single",
    "switchboard:random-bot-sqlite",
    "switchboard:random-bot-redis",
)

# kind -> [(field, how rounds are combined, limit, what it is)]: switchboard's
# value must be at most the limit.
ABSOLUTE_TARGETS = {
    "hold": [("bytes_per_connection", "median", 2 * 1024, "server RSS per idle connection")],
    "hold-http": [
        ("bytes_per_connection", "median", 2 * 1024, "server RSS per idle keep-alive connection")
    ],
    "download": [("rss_max_bytes", "max", 32 * MIB, "server RSS, highest of the runs")],
}


# kind -> the field of the server's CPU time per unit of work, and the unit.
CPU_COST = {
    "echo": ("server_cpu_us_per_mb", "µs per MB echoed"),
    "download": ("server_cpu_us_per_mb", "µs per MB sent"),
    "tar": ("server_cpu_us_per_mb", "µs per MB sent"),
    "connect": ("server_cpu_us_per_conn", "µs per connection"),
    "lines": ("server_cpu_us_per_msg", "µs per message"),
    "requests": ("server_cpu_us_per_req", "µs per request"),
    "wrk": ("server_cpu_us_per_req", "µs per request"),
    "datagrams": ("server_cpu_us_per_datagram", "µs per datagram"),
    "tls-handshake": ("server_cpu_us_per_handshake", "µs per handshake"),
    "tls-requests": ("server_cpu_us_per_req", "µs per request"),
    "tls-download": ("server_cpu_us_per_mb", "µs per MB sent"),
}

# kind -> (the server whose CPU per unit switchboard's is divided by, the
# most it may be): a unit of work may cost at most this much more than on
# the ceiling, or than on nginx. The HTTP variant of the download case
# counts too; the refusing and proxied connects and the durable histories
# have targets of their own (below).
CPU_TARGETS = {
    "echo": ("ceiling", 1.1),
    "connect": ("ceiling", 1.1),
    "lines": ("ceiling", 1.1),
    "datagrams": ("ceiling", 1.1),
    "download": ("ceiling", 1.1),
    "wrk": ("nginx", 1.0),
}
# Switchboard's servers held to CPU_TARGETS, beside plain "switchboard".
CPU_TARGET_SERVERS = ("switchboard", "switchboard:http", "switchboard:keyword-bot", "switchboard:random-bot")

# Resamples of the bootstrap confidence interval of a ratio.
BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ratio_ci(a, b, seed):
    """95% interval of median(a) / median(b), resampling each set of runs
    with replacement; seeded, so the same results give the same report."""
    if len(a) < 2 or len(b) < 2:
        return None
    rng = random.Random(seed)
    ratios = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        mb = statistics.median(rng.choices(b, k=len(b)))
        if mb:
            ratios.append(statistics.median(rng.choices(a, k=len(a))) / mb)
    if not ratios:
        return None
    ratios.sort()
    return ratios[int(0.025 * (len(ratios) - 1))], ratios[int(0.975 * (len(ratios) - 1))]


def table(out, title, header, align, rows, empty, intro=None):
    """Appends a section: its title, an optional paragraph, then a Markdown
    table of `rows` under `header` (cells) with `align` (its separator
    cells), or the `empty` sentence when there are no rows."""
    out.append(f"## {title}\n")
    if intro:
        out.append(intro + "\n")
    if rows:
        out.append("|" + "|".join(f" {cell} " if cell else " " for cell in header) + "|")
        out.append("|" + "|".join(align) + "|")
        out.extend(rows)
    else:
        out.append(empty)
    out.append("")


def kind_of(case):
    return case.split()[0]


def is_switchboard(server):
    return server == "switchboard" or server.startswith("switchboard:")


def fmt_num(value, field):
    if value is None:
        return "—"
    if field.endswith("_bytes"):
        return f"{value / MIB:.1f} MiB"
    if field in ("bytes_per_connection",):
        return f"{value:,.0f} B"
    if field.endswith("_us"):
        return f"{value:,.0f} µs"
    if field == "mb_per_sec":
        return f"{value:,.1f}"
    if field.endswith("_busy"):
        return f"{value:.0%}"
    return f"{value:,.0f}"


def fmt_ratio(value):
    if value is None:
        return "—"
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def numbers(runs, field):
    out = []
    for run in runs:
        value = run.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(float(value))
    return out


def median(values):
    return statistics.median(values) if values else None


def per_round_ratios(runs, other_runs, field):
    """`field` of each of `runs` over the same round's of `other_runs`
    (the rounds interleave the servers, so a round's ratio is the least
    touched by the machine's drift over the run)."""
    by_round = {r.get("round"): r for r in other_runs}
    ratios = []
    for run in runs:
        other = by_round.get(run.get("round"))
        a, b = numbers([run], field), numbers([other], field) if other else []
        if a and b and b[0]:
            ratios.append(a[0] / b[0])
    return ratios


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load(path):
    runs = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError as e:
                print(f"report.py: {path}:{number}: not JSON ({e}); skipped", file=sys.stderr)
    return runs


def build(runs, command, settings, notes):
    cases = {}  # case -> server -> [runs]; dicts keep first-seen order
    failed = []
    warned = [run for run in runs if run.get("warning")]
    for run in runs:
        case, server = run.get("case", "?"), run.get("server", "?")
        if "error" in run or run.get("ok") is False:
            failed.append(run)
            cases.setdefault(case, {}).setdefault(server, [])
            continue
        cases.setdefault(case, {}).setdefault(server, []).append(run)

    out = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.append("# Benchmark results\n")
    if "--quick" in command:
        out.append(
            "> **Quick smoke run** (1 round, 2-second runs): it shows that every mode "
            "works, its numbers are not a measurement. Run `bench/run.sh` for those.\n"
        )
    out.append(f"- date: {now}")
    out.append(
        f"- machine: {os.cpu_count()} CPUs ({cpu_model()}), "
        f"kernel {platform.system()} {platform.release()}"
    )
    out.append(f"- command: `{command}`")
    if settings:
        out.append(f"- settings: {settings}")
    out.append(
        "- method: every run starts its server fresh; rounds interleave the servers "
        "(A B C, A B C, ...); numbers are the median over rounds with min–max; a ratio "
        "is switchboard's median over the other server's median (per-round ratios in "
        "brackets: min–max; 95% interval by bootstrap over the runs)"
    )
    for line in notes:
        out.append(f"- note: {line}")
    out.append("")

    # Per case and server.
    out.append("## Medians\n")
    out.append("| case | server | runs | main number | median | min–max | other (medians) |")
    out.append("|---|---|---:|---|---:|---:|---|")
    for case, servers in cases.items():
        kind = kind_of(case)
        field, unit, _ = METRIC.get(kind, ("", "", True))
        for server, server_runs in servers.items():
            values = numbers(server_runs, field)
            if values:
                med = fmt_num(median(values), field)
                span = f"{fmt_num(min(values), field)} – {fmt_num(max(values), field)}"
            else:
                med, span = "—", "—"
            extras = []
            for extra in EXTRA.get(kind, []):
                ev = numbers(server_runs, extra)
                if ev:
                    extras.append(f"{extra} {fmt_num(median(ev), extra)}")
            out.append(
                f"| {case} | {server} | {len(values)} | {field} ({unit}) | {med} | {span} | "
                f"{', '.join(extras) or ''} |"
            )
    out.append("")

    # Ratios.
    ratio_rows = []
    summary = {"met": 0, "missed": 0, "no data": 0}
    for case, servers in cases.items():
        kind = kind_of(case)
        if kind not in RATIO_TARGETS:
            continue
        field, _, higher = METRIC[kind]
        # The refusing listener is compared with the serving one (below).
        for sb in [s for s in servers if is_switchboard(s) and s not in SAME_SERVER_VARIANTS]:
            sb_runs = servers[sb]
            sb_med = median(numbers(sb_runs, field))
            for other, target in RATIO_TARGETS[kind]:
                if other not in servers:
                    continue
                other_values = numbers(servers[other], field)
                other_med = median(other_values)
                ratio = sb_med / other_med if sb_med is not None and other_med else None
                ci = bootstrap_ratio_ci(numbers(sb_runs, field), other_values, f"{case}/{sb}/{other}")
                interval = f"{fmt_ratio(ci[0])} – {fmt_ratio(ci[1])}" if ci else "—"
                per_round = per_round_ratios(sb_runs, servers[other], field)
                spread = (
                    f" [{fmt_ratio(min(per_round))} – {fmt_ratio(max(per_round))}]"
                    if len(per_round) > 1
                    else ""
                )
                if target is None:
                    goal, mark = "—", ""
                elif ratio is None:
                    goal, mark = f"≥ {target:g}×", "no data"
                    summary["no data"] += 1
                else:
                    goal = f"≥ {target:g}×"
                    ok = ratio >= target if higher else ratio <= target
                    mark = "met" if ok else "**missed**"
                    summary["met" if ok else "missed"] += 1
                    if ci and ci[0] < target <= ci[1]:
                        mark += " (interval spans the target)"
                ratio_rows.append(
                    f"| {case} | {sb} / {other} | {fmt_ratio(ratio)}{spread} | {interval} | "
                    f"{goal} | {mark} |"
                )
    def variant_ratio(kind, variant, field, target_of, higher, what, base="switchboard"):
        """A switchboard variant against `base` (plain switchboard), same run
        and case; `target_of` is the target, or a function of the case name
        that gives it."""
        for case, servers in cases.items():
            if kind_of(case) != kind or variant not in servers:
                continue
            target = target_of(case) if callable(target_of) else target_of
            value = median(numbers(servers[variant], field))
            plain = median(numbers(servers.get(base, []), field))
            if value is None or not plain:
                mark, ratio = "no data", None
                summary["no data"] += 1
            else:
                ratio = value / plain
                ok = ratio >= target if higher else ratio <= target
                mark = "met" if ok else "**missed**"
                summary["met" if ok else "missed"] += 1
            goal = f"{'≥' if higher else '≤'} {target:g}×"
            ratio_rows.append(
                f"| {case} | {variant} / {base}, {what} | {fmt_ratio(ratio)} | — | {goal} | {mark} |"
            )

    # Refusing must be cheaper than serving: the server's CPU per connection
    # on a listener that denies everyone, against one that echoes.
    variant_ratio("connect", "switchboard:refused", CPU_COST["connect"][0], 0.5, False,
                  "server CPU per connection")
    # CPU per unit of work against the ceiling (or nginx): a target of its own.
    for case, servers in cases.items():
        kind = kind_of(case)
        if kind not in CPU_TARGETS:
            continue
        field, unit = CPU_COST[kind]
        other, limit = CPU_TARGETS[kind]
        base_values = numbers(servers.get(other, []), field)
        base = median(base_values)
        for sb in [s for s in servers if s in CPU_TARGET_SERVERS]:
            values = numbers(servers[sb], field)
            cost = median(values)
            ci = bootstrap_ratio_ci(values, base_values, f"{case}/{sb}/{other}/cpu")
            interval = f"{fmt_ratio(ci[0])} – {fmt_ratio(ci[1])}" if ci else "—"
            per_round = per_round_ratios(servers[sb], servers.get(other, []), field)
            spread = (
                f" [{fmt_ratio(min(per_round))} – {fmt_ratio(max(per_round))}]"
                if len(per_round) > 1
                else ""
            )
            if cost is None or not base:
                mark, ratio = "no data", None
                summary["no data"] += 1
            else:
                ratio = cost / base
                ok = ratio <= limit
                mark = "met" if ok else "**missed**"
                summary["met" if ok else "missed"] += 1
                if ci and ci[0] <= limit < ci[1]:
                    mark += " (interval spans the target)"
            ratio_rows.append(
                f"| {case} | {sb} / {other}, server CPU {unit} | {fmt_ratio(ratio)}{spread} | {interval} | "
                f"≤ {limit:g}× | {mark} |"
            )
    # A PROXY protocol v2 header must cost little.
    variant_ratio("connect", "switchboard:proxy-v2", METRIC["connect"][0], 0.9, True, "connections/s")
    # HTTP on the download port must cost little against the raw protocol.
    variant_ratio("download", "switchboard:http", METRIC["download"][0], 0.95, True, "MB/s")
    # The random-bot's durable and shared histories against the memory one.
    # At 64 connections, where batches fill, the durable histories must come
    # closer to the memory one than at 8.
    history_targets = {
        "switchboard:random-bot-sqlite": lambda case: 0.8 if case.endswith(" c64") else 0.5,
        "switchboard:random-bot-redis": lambda case: 0.5 if case.endswith(" c64") else 0.3,
    }
    for variant, target_of in history_targets.items():
        variant_ratio("lines", variant, METRIC["lines"][0], target_of, True,
                      "messages/s", base="switchboard:random-bot")
    # A folder as one tar stream against one file of the same total size,
    # same run: files of 16 MiB at least 0.9x its MB/s; files of 4 KiB
    # reported beside it (their target is in files/s, below).
    for case, servers in cases.items():
        if kind_of(case) != "tar" or "switchboard:single" not in servers:
            continue
        target = 0.9 if case.endswith("x16M") else None
        archive = median(numbers(servers.get("switchboard", []), "mb_per_sec"))
        single = median(numbers(servers["switchboard:single"], "mb_per_sec"))
        ratio = archive / single if archive is not None and single else None
        if target is None:
            goal, mark = "—", ""
        elif ratio is None:
            goal, mark = f"≥ {target:g}×", "no data"
            summary["no data"] += 1
        else:
            goal = f"≥ {target:g}×"
            mark = "met" if ratio >= target else "**missed**"
            summary["met" if ratio >= target else "missed"] += 1
        ratio_rows.append(
            f"| {case} | switchboard (the folder) / switchboard:single (one file), MB/s | "
            f"{fmt_ratio(ratio)} | — | {goal} | {mark} |"
        )
    abs_rows = []
    for case, servers in cases.items():
        kind = kind_of(case)
        if kind == "tar" and case.endswith("x4K") and "switchboard" in servers:
            # Files a second: the rate over the archive's bytes per file.
            files = int(case.split()[1].split("x")[0])
            rates = []
            for run in servers["switchboard"]:
                mb, size = run.get("mb_per_sec"), run.get("expect_size")
                if isinstance(mb, (int, float)) and isinstance(size, (int, float)) and size:
                    rates.append(mb * 1e6 * files / size)
            value = median(rates) if rates else None
            if value is None:
                mark = "no data"
                summary["no data"] += 1
            else:
                mark = "met" if value >= 20000 else "**missed**"
                summary["met" if value >= 20000 else "missed"] += 1
            shown = f"{value:,.0f}" if value is not None else "—"
            abs_rows.append(
                f"| {case} | switchboard | files a second (median) | {shown} | ≥ 20,000 | {mark} |"
            )
        for field, how, limit, what in ABSOLUTE_TARGETS.get(kind, []):
            for sb in [s for s in servers if is_switchboard(s)]:
                values = numbers(servers[sb], field)
                value = (max(values) if how == "max" else median(values)) if values else None
                if value is None:
                    mark = "no data"
                    summary["no data"] += 1
                else:
                    ok = value <= limit
                    mark = "met" if ok else "**missed**"
                    summary["met" if ok else "missed"] += 1
                abs_rows.append(
                    f"| {case} | {sb} | {what} ({field}, {how}) | {fmt_num(value, field)} | "
                    f"≤ {fmt_num(limit, field)} | {mark} |"
                )
            if kind in ("hold", "hold-http"):
                wanted = case.split()[1] if len(case.split()) > 1 else None
                for sb in [s for s in servers if is_switchboard(s)]:
                    opened = numbers(servers[sb], "connections_opened")
                    answered = numbers(servers[sb], "answered")
                    if wanted and wanted.isdigit() and opened:
                        ok = min(opened) >= int(wanted) and (
                            not answered or min(answered) >= int(wanted)
                        )
                        mark = "met" if ok else "**missed**"
                        summary["met" if ok else "missed"] += 1
                        got = f"{min(opened):,.0f} opened"
                        if answered:
                            got += f", {min(answered):,.0f} answered"
                        abs_rows.append(
                            f"| {case} | {sb} | connections held (lowest of the runs) | {got} | "
                            f"{int(wanted):,} | {mark} |"
                        )

    cost_rows = []
    for case, servers in cases.items():
        kind = kind_of(case)
        if kind not in CPU_COST:
            continue
        field, unit = CPU_COST[kind]
        ceiling = median(numbers(servers.get("ceiling", []), field))
        floor = median(numbers(servers.get("tokio-floor", []), field))
        for server, server_runs in servers.items():
            values = numbers(server_runs, field)
            # socat and ncat fork per connection: children still running or
            # not yet reaped when a run ends are not in their /proc times.
            # nginx runs as one process (master_process off): its time is whole.
            if not values or not (is_switchboard(server) or server in ("ceiling", "tokio-floor", "nginx")):
                continue
            cost = median(values)
            busy = median(numbers(server_runs, "server_busy"))
            versus = fmt_ratio(cost / ceiling) if ceiling and server != "ceiling" else ""
            over_floor = fmt_ratio(cost / floor) if floor and is_switchboard(server) else ""
            cost_rows.append(
                f"| {case} | {server} | {cost:,.1f} {unit} | "
                f"{f'{busy:.0%}' if busy is not None else '—'} | {versus} | {over_floor} |"
            )
    table(
        out,
        "Ratios",
        ["case", "ratio", "of medians [per round]", "95% interval", "target", ""],
        ["---", "---", "---:", "---:", "---:", "---"],
        ratio_rows,
        "No ratio could be computed.",
    )
    table(
        out,
        "Server CPU per unit of work",
        ["case", "server", "CPU per unit (median)", "server busy", "/ ceiling", "/ tokio floor"],
        ["---", "---", "---:", "---:", "---:", "---:"],
        cost_rows,
        "Not measured (the runs carry no server CPU time).",
        intro=(
            "What each unit of work cost the server (its targets are in the ratios above), "
            "from its /proc CPU time "
            "over the run (switchboard, the ceilings and nginx, one process; socat and ncat "
            "fork per connection, and their children's time is not counted reliably). Where the load generator is the "
            "limit (server busy well below 100%), equal rates can hide unequal costs; this "
            "shows them (lower is better). The tokio floor (bench/floor) is the "
            "plainest echo tokio runs, a task a connection and nothing else: its cost over the "
            "ceiling's is the runtime's, and switchboard's over the floor's (the last column) "
            "is switchboard's own."
        ),
    )
    table(
        out,
        "Absolute targets",
        ["case", "server", "what", "value", "target", ""],
        ["---", "---", "---", "---:", "---:", "---"],
        abs_rows,
        "None measured.",
    )
    out.append(
        f"Targets: {summary['met']} met, {summary['missed']} missed"
        + (f", {summary['no data']} without data" if summary["no data"] else "")
        + ".\n"
    )
    if failed:
        out.append("## Failed runs\n")
        for run in failed:
            out.append(
                f"- {run.get('case')} / {run.get('server')} round {run.get('round')}: "
                f"{run.get('error')}"
            )
        out.append("")
    if warned:
        out.append("## Warnings (runs kept in the medians)\n")
        for run in warned:
            out.append(
                f"- {run.get('case')} / {run.get('server')} round {run.get('round')}: "
                f"{run.get('warning')}"
            )
        out.append("")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="JSONL written by bench/run.sh")
    parser.add_argument("--out", required=True, help="the Markdown file to write")
    parser.add_argument("--command", default="bench/run.sh", help="the command that ran")
    parser.add_argument("--settings", default="", help="one line describing the settings")
    parser.add_argument("--notes", help="a file of notes, one a line")
    args = parser.parse_args()

    notes = []
    if args.notes and os.path.exists(args.notes):
        with open(args.notes, encoding="utf-8") as f:
            notes = [line.strip() for line in f if line.strip()]
    text = build(load(args.results), args.command, args.settings, notes)
    # The causes of missed targets are written by people (bench/ANALYSIS.md)
    # and carried into every report, next to the numbers they explain.
    analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ANALYSIS.md")
    if os.path.exists(analysis):
        with open(analysis, encoding="utf-8") as f:
            text = text.rstrip("\n") + "\n\n" + f.read()
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
