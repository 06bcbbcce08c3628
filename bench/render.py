"""Render the README's benchmark and chaos tables from measured result files (never by hand).

    python bench/render.py                       # print the Markdown
    python bench/render.py --readme README.md    # replace the blocks between the bench markers

Throughput: the newest `bench/results/<date>.json` (full mode) is used; when there is none, the newest
quick run, labelled as such. Chaos: the newest `bench/results/chaos-*.json`. Baseline: the newest
`bench/results/baseline-*.json` (`bench/run.py --only throughput,latency --out ...` with
`$BENCH_BASELINE`: event-consumer against another commit's tree, interleaved in one run).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SECTIONS = (
    "throughput",
    "latency",
    "reconnect",
    "tokens",
    "memory",
    "scale",
    "sidebyside",
    "chaos",
    "baseline",
)
MARKERS = {name: (f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->") for name in SECTIONS}
LABELS = {
    "null": "hub send rate (null reader)",
    "raw": "bare `websockets` recv loop (ceiling)",
    "event-consumer": "**event-consumer** -> file sink",
    "event-consumer-devnull": "**event-consumer** -> /dev/null",
    "event-consumer-fsync": "**event-consumer** -> file sink, default fsync (1 s interval)",
    "node-signalr": "`@microsoft/signalr` on Node",
    "pysignalr": "pysignalr",
    "signalrcore": "signalrcore",
    "bare": "bare `websockets` recv loop (no parsing)",
    "pysignalr-decode": "pysignalr (decode only, no output)",
    "node-decode": "`@microsoft/signalr` on Node (decode only)",
    "event-consumer-compact": '**event-consumer** -> file, `patches = "compact"`',
    "event-consumer-baseline": "event-consumer before issue 15 (baseline commit) -> file (faithful)",
    "python-floor": "Python floor: recv + one typed decode + envelope line + os.write (faithful, no daemon)",
}
SIDE_LABELS = {**LABELS, "event-consumer": "**event-consumer** -> file (faithful)"}


def newest(pattern: str, exclude: tuple[str, ...] = ()) -> Path | None:
    files = sorted(p for p in RESULTS.glob(pattern) if not any(x in p.name for x in exclude))
    return files[-1] if files else None


def throughput_file() -> Path | None:
    return section_file("cells")


def _cell(stat: dict[str, float] | None, fmt: str) -> str:
    if not stat:
        return "-"
    if stat["min"] == stat["max"]:  # one run
        return f"{stat['median']:{fmt}}"
    return f"{stat['median']:{fmt}} ({stat['min']:{fmt}}-{stat['max']:{fmt}})"


def _ms(stat: dict[str, float] | None) -> str:
    return _cell(stat, ".2f") if stat else "-"


def _header(sec: dict[str, Any], source: str, what: str) -> str:
    """A section's own date, mode, machine and commit (see run.py: each section carries them)."""
    m = sec["machine"]
    return (
        f"Measured {sec['date']} ({sec['mode']} mode; {what}) on {m['cores']} cores ({m['cpu']}), "
        f"event-consumer {sec['versions']['event-consumer']}. Source: `{source}`."
    )


def render_latency(doc: dict[str, Any], source: str) -> str:
    lat = doc["latency"]
    v = lat["versions"]
    lines = [
        _header(
            lat,
            source,
            f"{lat['seconds_per_run']:g} s per run, {lat['runs_per_cell']} runs per cell; "
            "median (min-max) of the per-run percentiles, in ms",
        ),
        "",
        f"Method: {lat['method']} Node client: @microsoft/signalr {v['@microsoft/signalr']} "
        f"(Node {v['node']}), JSON protocol.",
        "",
        "| client | rate (msgs/s) | hub sent (msgs/s) | p50 | p99 | p99.9 | max | lower bound p50 / p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {**LABELS, "event-consumer": "**event-consumer** -> file sink, fsync never"}
    for c in lat["cells"]:
        label = labels.get(c["client"], c["client"])
        if c.get("error") and not c["runs"]:
            lines.append(f"| {label} | {c['rate']:,} | failed: {c['error'][:80]} | | | | | |")
            continue
        w, sec = c["write"], c["secondary"]
        lower = f"{sec['p50']['median']:.2f} / {sec['p99']['median']:.2f}" if sec.get("p50") else "-"
        lines.append(
            f"| {label} | {c['rate']:,} | {_cell(c['hub_send_rate'], ',.0f')} | {_ms(w['p50'])} | "
            f"{_ms(w['p99'])} | {_ms(w['p99_9'])} | {_ms(w['max'])} | {lower} |"
        )
    lines += [
        "",
        "Lower bound: event-consumer = the envelope's `received_at`; Node = the line handed to the "
        "WriteStream (before the write).",
    ]
    lines += _failures(lat["cells"], lambda c: f"{c['client']} at {c['rate']:,}/s")
    targets = lat.get("target_p99_le_node") or {}
    if targets:
        lines += ["", "| target | rate | event-consumer p99 | Node p99 | met |", "|---|---:|---:|---:|---|"]
        for key, t in targets.items():
            rate, _, fsync = key.partition("-")
            what = "p99 <= the Node client's" + (" (event-consumer with default fsync)" if fsync else "")
            lines.append(
                f"| {what} | {int(rate):,}/s | {t['ec_p99_ms']:.2f} ms | "
                f"{t['node_p99_ms']:.2f} ms | {'yes' if t['met'] else '**no**'} |"
            )
    return "\n".join(lines)


def _failures(cells: list[dict[str, Any]], name: Any) -> list[str]:
    """A note per cell with failed runs (the table shows the runs that completed)."""
    notes = [
        f"- {name(c)}: {c['failed_runs']} run(s) failed, last error: {c['error'][:200]}"
        for c in cells
        if c.get("error") and c.get("runs")
    ]
    return ["", "Failed runs (not in the figures above):", "", *notes] if notes else []


def render_reconnect(doc: dict[str, Any], source: str) -> str:
    rec = doc["reconnect"]
    lines = [
        _header(rec, source, f"{rec['restarts']} restarts; median (min-max)"),
        "",
        f"Method: {rec['method']}",
        "",
        "| measure | seconds |",
        "|---|---:|",
        f"| hub listening again -> first relayed message (the gap) | {_cell(rec['gap_s'], '.3f')} |",
        f"| hub listening again -> `reconnected` marker (backoff wait + connect) | "
        f"{_cell(rec['to_reconnected_s'], '.3f')} |",
        f"| `reconnected` -> first relayed message (resubscribe round + next broadcast) | "
        f"{_cell(rec['reconnected_to_first_s'], '.3f')} |",
    ]
    if rec.get("error"):
        lines.append(f"| failed | {rec['error'][:100]} |")
    return "\n".join(lines)


def render_tokens(doc: dict[str, Any], source: str) -> str:
    tok = doc["tokens"]
    lines = [
        _header(tok, source, "one run per hub behaviour"),
        "",
        f"Method: {tok['method']}",
        "",
        "| hub | token lifetime | window | token requests | reconnects | requests per lifetime | "
        "**per hour at 300 s tokens** |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in tok["rows"]:
        hub = "closes at token expiry" if row["hub_closes_at_expiry"] else "does not close at expiry"
        lines.append(
            f"| {hub} | {row['token_lifetime_s']:g} s | {row['window_s']:.1f} s | {row['token_requests']} | "
            f"{row['reconnects']} | {row['requests_per_lifetime']:.2f} | "
            f"**{row['requests_per_hour_300s']:.1f}** |"
        )
    return "\n".join(lines)


def render_memory(doc: dict[str, Any], source: str) -> str:
    mem = doc["memory"]
    cps = mem["checkpoints"]
    lines = [_header(mem, source, "one run"), "", f"Method: {mem['method']}", ""]
    if mem.get("error"):
        return "\n".join([*lines, f"Failed: {mem['error']}"])
    rss = mem["rss_kib"]
    lines += [
        "| after | RSS (MiB) |",
        "|---|---:|",
        f"| {rss['warm_messages']:,} messages (warm) | {rss['warm'] / 1024:.1f} |",
    ]
    lines += [f"| {cp:,} messages | {rss[str(cp)] / 1024:.1f} |" for cp in cps]
    lines += [
        f"| peak (VmHWM) | {mem['peak_rss_kib'] / 1024:.1f} |",
        "",
        f"Growth from warm to {max(cps):,} messages: {mem['growth_kib_warm_to_last'] / 1024:+.1f} MiB.",
    ]
    return "\n".join(lines)


def render_scale(doc: dict[str, Any], source: str) -> str:
    sc = doc["scale"]
    lines = [
        _header(
            sc,
            source,
            f"{sc['messages_per_run']:,} messages per run, {sc['runs_per_cell']} runs per cell; "
            "median (min-max)",
        ),
        "",
        f"Method: {sc['method']}",
        "",
        "| one process, ... | msgs/s (total) | CPU-s per 100k msgs | max RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for c in sc["cells"]:
        what = (
            f"{c['n']} event{'s' if c['n'] != 1 else ''}, one connection"
            if c["mode"] == "events"
            else (
                f"{c['n']} hub{'s' if c['n'] != 1 else ''} ({c['n']} connection{'s' if c['n'] != 1 else ''})"
            )
        )
        if c.get("error") and not c["runs"]:
            lines.append(f"| {what} | failed: {c['error'][:80]} | | |")
            continue
        rss = c.get("max_rss_kib")
        rss_mib = {k: v / 1024 for k, v in rss.items()} if rss else None
        lines.append(
            f"| {what} | {_cell(c['msgs_per_s'], ',.0f')} | {_cell(c['cpu_s_per_100k'], '.2f')} | "
            f"{_cell(rss_mib, '.0f')} |"
        )
    lines += _failures(sc["cells"], lambda c: f"{c['mode']} x {c['n']}")
    return "\n".join(lines)


def render_throughput(doc: dict[str, Any], source: str) -> str:
    v = doc["versions"]
    m = doc["machine"]
    pay = doc["payload"]
    lines = [
        f"Measured {doc['date']} ({doc['mode']} mode: {doc['messages_per_run']:,} messages per run, "
        f"{doc['runs_per_cell']} runs per cell; median (min-max)) on {m['cores']} cores ({m['cpu']}), "
        f"shared with other work, so absolute numbers are noisy; compare ratios. Source: `{source}`.",
        "",
        f"Payload: `{pay['target']}` batches of {pay['cars_min']}-{pay['cars_max']} real car patches "
        f"(packaged replays), JSON {pay['json_bytes_min']:,}-{pay['json_bytes_max']:,} B "
        f"(mean {pay['json_bytes_mean']:,}), MessagePack mean {pay['msgpack_bytes_mean']:,} B. "
        f"Peers: @microsoft/signalr {v['@microsoft/signalr']} (Node {v['node']}), "
        f"pysignalr {v['pysignalr']}, "
        f"signalrcore {v['signalrcore']}, websockets {v['websockets']}; Python {v['python']}; "
        f"event-consumer {v['event-consumer']}.",
        "",
        "| client | protocol | msgs/s | CPU-s per 100k msgs | hub send rate during run (msgs/s) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in doc["cells"]:
        label = LABELS.get(row["client"], row["client"])
        if row.get("error") and not row["runs"]:
            lines.append(f"| {label} | {row['protocol']} | failed: {row['error'][:80]} | | |")
            continue
        lines.append(
            f"| {label} | {row['protocol']} | {_cell(row['msgs_per_s'], ',.0f')} | "
            f"{_cell(row['cpu_s_per_100k'], '.2f')} | {_cell(row['hub_msgs_per_s'], ',.0f')} |"
        )
    lines += ["", "Targets (issue 7) against these figures — a target not met is a target, not a result:", ""]
    names = {
        "throughput_vs_pysignalr": "throughput >= 1.5x pysignalr",
        "throughput_vs_node-signalr": "throughput >= 3x the Node official client",
        "throughput_vs_raw": "throughput >= 0.9x the bare recv loop",
        "cpu_vs_pysignalr": "CPU per message <= 0.6x pysignalr's",
    }
    lines += ["| target | protocol | measured | met |", "|---|---|---:|---|"]
    for protocol, entry in doc["ratios"].items():
        for key, r in entry.items():
            lines.append(
                f"| {names.get(key, key)} | {protocol} | {r['ratio']:.2f}x | "
                f"{'yes' if r['met'] else '**no**'} |"
            )
    return "\n".join(lines)


BASELINE_FIGURES = (
    ("throughput", "msgs_per_s_json", "JSON throughput (msgs/s)", ",.0f"),
    ("throughput", "msgs_per_s_messagepack", "MessagePack throughput (msgs/s)", ",.0f"),
    ("throughput", "cpu_s_per_100k_json", "JSON CPU-s per 100k msgs", ".2f"),
    ("throughput", "cpu_s_per_100k_messagepack", "MessagePack CPU-s per 100k msgs", ".2f"),
    ("latency", "p99_1000", "p99 latency at 1,000 msgs/s (ms)", ".2f"),
    ("latency", "p99_5000", "p99 latency at 5,000 msgs/s (ms)", ".2f"),
)


def render_baseline(doc: dict[str, Any], source: str) -> str:
    """event-consumer against the baseline commit's tree, measured interleaved in the same run."""
    base = doc.get("baseline") or doc.get("latency", {}).get("baseline", "?")
    lat = doc.get("latency", {})
    m = doc["machine"]
    lines = [
        f"Measured {doc['date']} on {m['cores']} cores ({m['cpu']}), shared with other work: event-consumer "
        f"{doc['versions']['event-consumer']} and the baseline `{base}` (its own tree and bench client, "
        f"`event-consumer-baseline`) run by turns in one run: throughput {doc.get('messages_per_run', 0):,} "
        f"messages x {doc.get('runs_per_cell', 0)} runs per cell, latency "
        f"{lat.get('seconds_per_run', 0):g} s x {lat.get('runs_per_cell', 0)} runs per rate (JSON, file "
        "sink, fsync never). Figures: median (min-max) of the runs. Change: run i of each is paired (they "
        "ran back to back), change = median over the pairs of ours / baseline - 1, with the range of the "
        f"pairs' changes: the spread is the machine's noise. Source: `{source}`.",
        "",
        f"| figure | event-consumer | baseline `{base}` | change (range over pairs) | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    verdicts: dict[str, list[str]] = {}
    for section, key, label, fmt in BASELINE_FIGURES:
        sec = doc if section == "throughput" else lat
        row = (sec.get("vs_baseline") or {}).get(key)
        if not row:
            lines.append(f"| {label} | - | - | - | not measured |")
            verdicts.setdefault("not measured", []).append(label)
            continue
        verdicts.setdefault(row["verdict"], []).append(label)
        spread = row.get("change_range")
        change = f"{row['change'] * 100:+.1f} %" + (
            f" ({spread[0] * 100:+.0f} to {spread[1] * 100:+.0f} %)" if spread else ""
        )
        lines.append(
            f"| {label} | {_cell(row['ours'], fmt)} | {_cell(row['baseline'], fmt)} | {change} | "
            f"{row['verdict']} |"
        )
    worse = verdicts.get("worse", [])
    within = len(BASELINE_FIGURES) - len(worse) - len(verdicts.get("not measured", []))
    summary = f"{within} of {len(BASELINE_FIGURES)} figures are within 5 % of the baseline or better" + (
        f"; worse by more than 5 %: {', '.join(worse)}." if worse else "."
    )
    return "\n".join([*lines, "", summary])


def _rounds(row: dict[str, Any] | None, key: str, fmt: str) -> str:
    """Every round's value, in run order (`a / b`), as the issue's table shows them."""
    if row is None:
        return "-"
    if row.get("error") and not row["runs"]:
        return f"failed: {row['error'][:60]}"
    return " / ".join(f"{r[key]:{fmt}}" for r in row["raw"]) or "-"


def render_sidebyside(doc: dict[str, Any], source: str) -> str:
    sec = doc["sidebyside"]
    v = sec["versions"]
    pay = sec["payload"]
    n = sec["messages_per_run"]
    rows = {(c["client"], c["protocol"]): c for c in sec["cells"]}
    clients = list(dict.fromkeys(c["client"] for c in sec["cells"]))
    lines = [
        _header(sec, source, f"{n:,} frames per run, {sec['runs_per_cell']} rounds; every round shown"),
        "The machine was shared with other work while measuring: compare ratios within the run.",
        "",
        f"Frames: `ReceiveCarPatches` of {pay['cars']} cars, JSON {pay['json_frame_bytes_mean']:,} B "
        f"(every patch key present, unset ones null), MessagePack {pay['msgpack_frame_bytes_mean']:,} B "
        f"({pay['slots']}-slot integer-keyed arrays). Peers: @microsoft/signalr {v['@microsoft/signalr']} "
        f"(Node {v['node']}), pysignalr {v['pysignalr']}, websockets {v['websockets']}; "
        f"Python {v['python']}.",
        "",
        f"Method: {sec['method']}",
        "",
        f"| client | JSON msgs/s | MessagePack msgs/s | JSON CPU-s / {n:,} | MessagePack CPU-s / {n:,} |",
        "|---|---:|---:|---:|---:|",
    ]
    for client in clients:
        js, mp = rows.get((client, "json")), rows.get((client, "messagepack"))
        lines.append(
            f"| {SIDE_LABELS.get(client, client)} | {_rounds(js, 'msgs_per_s', ',.0f')} | "
            f"{_rounds(mp, 'msgs_per_s', ',.0f')} | {_rounds(js, 'cpu_seconds', '.2f')} | "
            f"{_rounds(mp, 'cpu_seconds', '.2f')} |"
        )
    hub = [
        f"{p}: {_rounds(rows.get(('bare', p)), 'hub_msgs_per_s', ',.0f')}"
        for p in ("json", "messagepack")
        if ("bare", p) in rows
    ]
    if hub:
        lines += [
            "",
            "The hub kept ahead of every client: during the bare loop's runs it wrote (as fast as the "
            f"socket took them) {'; '.join(hub)} msgs/s.",
        ]
    names = {
        "throughput_vs_pysignalr-decode": "event-consumer msgs/s vs pysignalr",
        "throughput_vs_node-decode": "event-consumer msgs/s vs the Node client",
        "throughput_vs_bare": "event-consumer msgs/s vs the bare loop",
        "cpu_vs_pysignalr-decode": "event-consumer CPU per message vs pysignalr (at most)",
    }
    lines += ["", "| target (issue 15) | protocol | target | measured | met |", "|---|---|---:|---:|---|"]
    for protocol, entry in sec["ratios"].items():
        for key, r in entry.items():
            lines.append(
                f"| {names.get(key, key)} | {protocol} | {r['target']:g}x | {r['ratio']:.2f}x | "
                f"{'yes' if r['met'] else '**no**'} |"
            )
    return "\n".join(lines)


def render_chaos(doc: dict[str, Any], source: str) -> str:
    lines = [
        f"Measured {doc['date']} ({doc['mode']} form) on {doc['machine']['cores']} cores. "
        f"Source: `{source}`. "
        "Counts come from the hub-side send log (what the hub queued for the daemon's connection) and the "
        "daemon's sink file; `lost` = sent while the daemon was connected but never written.",
        "",
        "| scenario | sent | relayed | lost | dup | time to recover | verdict |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in doc["scenarios"]:
        rec = row.get("recover_seconds")
        rec_s = f"{rec:.2f} s" if isinstance(rec, int | float) else (rec or "-")
        lines.append(
            f"| {row['scenario']} | {row.get('sent', '-')} | {row.get('relayed', '-')} | "
            f"{row.get('lost', '-')} | "
            f"{row.get('dup', '-')} | {rec_s} | {row.get('verdict', '')} |"
        )
    return "\n".join(lines)


RENDERERS = {
    "latency": render_latency,
    "reconnect": render_reconnect,
    "tokens": render_tokens,
    "memory": render_memory,
    "scale": render_scale,
    "sidebyside": render_sidebyside,
}


def section_file(section: str) -> Path | None:
    """The newest full-mode results file holding `section`, else the newest quick one."""
    for pattern in (r"\d{4}-\d{2}-\d{2}\.json", r"\d{4}-\d{2}-\d{2}-quick\.json"):
        files = sorted(p for p in RESULTS.glob("20*.json") if re.fullmatch(pattern, p.name))
        for path in reversed(files):
            if section in json.loads(path.read_text()):
                return path
    return None


def rendered() -> dict[str, str]:
    out: dict[str, str] = {}
    tp = throughput_file()
    if tp is not None:
        out["throughput"] = render_throughput(json.loads(tp.read_text()), f"bench/results/{tp.name}")
    for section, render in RENDERERS.items():
        path = section_file(section)
        if path is not None:
            out[section] = render(json.loads(path.read_text()), f"bench/results/{path.name}")
    bl = newest("baseline-*.json")
    if bl is not None:
        out["baseline"] = render_baseline(json.loads(bl.read_text()), f"bench/results/{bl.name}")
    ch = newest("chaos-*.json")
    if ch is not None:
        out["chaos"] = render_chaos(json.loads(ch.read_text()), f"bench/results/{ch.name}")
    return out


def update_readme(path: Path, blocks: dict[str, str]) -> None:
    text = path.read_text()
    for name, body in blocks.items():
        start, end = MARKERS[name]
        i, j = text.find(start), text.find(end)
        if i < 0 or j < i:
            continue  # markers absent: nothing to replace
        text = text[: i + len(start)] + "\n" + body + "\n" + text[j:]
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readme", type=Path, help="README to update in place")
    args = parser.parse_args()
    blocks = rendered()
    if args.readme:
        update_readme(args.readme, blocks)
    else:
        print("\n\n".join(blocks.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
