#!/usr/bin/env python3
"""Turns logbench's results.json into the benchmark table, BENCHMARKS.md and a PNG plot.

    report.py RESULTS_JSON --markdown BENCHMARKS.md --plot bench/benchmarks.png
              [--criterion DIR] [--notes bench/findings.md] [--load-before "a b c"]

Prints the table and, as its very last line, `targets: N met, M missed`. Every target of
issue 4 is checked on the figures of this one run; where the addon ran twice (local
directory and S3 archive) the worse of the two runs is the one compared.
"""

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

MIB = 1 << 20
ADDONS = ("addon-local", "addon-s3")


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "model": model,
        "ram_gib": mem_kib / MIB,
        "kernel": platform.release(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def fmt_bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def fmt_ms(x):
    return f"{x:.2f} ms" if x < 100 else f"{x:.0f} ms"


def targets(r):
    """The issue's targets as (name, measured, limit text, met)."""
    by = {s["name"]: s for s in r["stores"]}
    addons = [by[n] for n in ADDONS if n in by]
    out = []
    file, sqlite = by["file"], by["sqlite"]

    worst = min(addons, key=lambda s: s["stream"]["mb_per_second"])
    ratio = worst["stream"]["mb_per_second"] / file["stream"]["mb_per_second"]
    out.append(("LogAppend throughput vs file store", f"{ratio:.2f}× ({worst['name']})", "≥ 1.0×", ratio >= 1.0))
    ratio = worst["stream"]["mb_per_second"] / sqlite["stream"]["mb_per_second"]
    out.append(("LogAppend throughput vs SQLite store", f"{ratio:.1f}× ({worst['name']})", "≥ 5×", ratio >= 5))

    if "addon-s3" in by:
        p99 = by["addon-s3"]["paced"]["p99_ms"]
        out.append(("LogAppend p99, 32 steps streaming while archives upload (S3)", fmt_ms(p99), "≤ 2 ms", p99 <= 2))
    else:
        out.append(("LogAppend p99 while archives upload (S3)", "not measured (no S3)", "≤ 2 ms", False))

    f100 = file["find"].get("100k")
    if f100:
        worst = max(addons, key=lambda s: s["find"]["100k"]["median_ms"])
        ratio = worst["find"]["100k"]["median_ms"] / f100["median_ms"]
        out.append(("LogFind of a finished 100k-line step vs file store", f"{ratio:.2f}× ({worst['name']})", "≤ 1.5×", ratio <= 1.5))

    worst = max(addons, key=lambda s: s["bytes_at_rest"])
    ratio = worst["bytes_at_rest"] / file["bytes_at_rest"]
    out.append(("Bytes at rest vs file store", f"1/{1 / ratio:.1f} ({worst['name']})", "≤ 1/8", ratio <= 1 / 8))

    if "addon-s3" in by:
        s3 = by["addon-s3"]["s3"]
        worst = max(s3["requests_per_step_max"], s3["paced_requests_per_step_max"])
        out.append(("S3 requests per step (< 64 MiB), worst step", f"{worst} (mean {s3['requests_per_step_mean']:.2f})", "≤ 3", worst <= 3))
    else:
        out.append(("S3 requests per step", "not measured (no S3)", "≤ 3", False))

    peak = max(s["rss"]["peak_after_find_kib"] for s in addons) * 1024
    answer = max(s["largest_find_answer_bytes"] for s in addons)
    limit = 64 * MIB + 2.5 * answer
    out.append(("Addon peak RSS vs 64 MiB + 2.5× largest LogFind answer",
                f"{peak / MIB:.0f} MiB (answer {answer / MIB:.0f} MiB, bound {limit / MIB:.0f} MiB)",
                "≤ bound", peak <= limit))
    many = {m["running_steps"]: m for m in r["many_steps"]}
    lo, hi = min(many), max(many)
    a, b = many[lo]["peak_rss_kib"] / 1024, many[hi]["peak_rss_kib"] / 1024
    out.append((f"Addon RSS flat in running steps ({lo} → {hi})", f"{a:.0f} → {b:.0f} MiB",
                "≤ 64 MiB and ≤ 1.25×", b <= 64 and b <= 1.25 * a))
    return out


def tables(r):
    stores = r["stores"]
    names = [s["name"] for s in stores]
    rows = []

    def row(label, fn):
        rows.append([label] + [fn(s) for s in stores])

    row("append, saturated: lines/s", lambda s: f"{s['stream']['lines_per_second']:,.0f}")
    row("append, saturated: MB/s of log", lambda s: f"{s['stream']['mb_per_second']:.1f}")
    row("append, saturated: p50 / p99", lambda s: f"{fmt_ms(s['stream']['p50_ms'])} / {fmt_ms(s['stream']['p99_ms'])}")
    row("append, paced 32 steps: lines/s", lambda s: f"{s['paced']['lines_per_second']:,.0f}")
    row("append, paced: p50 / p99", lambda s: f"{fmt_ms(s['paced']['p50_ms'])} / {fmt_ms(s['paced']['p99_ms'])}")
    row("append, paced: p99.9 / max", lambda s: f"{fmt_ms(s['paced']['p999_ms'])} / {fmt_ms(s['paced']['max_ms'])}")
    row("failed appends, saturated / paced (lines lost)", lambda s: f"{s['stream']['errors']} / {s['paced']['errors']}")
    row("paced batches that missed their slot", lambda s: f"{s['paced']['late_batches']} of {s['paced']['calls']}")
    row("archive drain after the last StepFinished", lambda s: f"{s['archive_drain_seconds']:.2f} s" if s["name"] in ADDONS else "–")
    for key in list(stores[0]["find"].keys()):
        row(f"LogFind {key} lines (median)", lambda s, k=key: fmt_ms(s["find"][k]["median_ms"]))
    row("LogDelete p50 / p99", lambda s: f"{fmt_ms(s['delete']['p50_ms'])} / {fmt_ms(s['delete']['p99_ms'])}")
    row("bytes at rest (streamed steps)", lambda s: fmt_bytes(s["bytes_at_rest"]))
    row("CPU seconds per GB of log", lambda s: f"{s['cpu_seconds_per_gb']:.0f}")
    row("peak RSS after streaming / after LogFind",
        lambda s: f"{s['rss']['peak_after_stream_kib'] / 1024:.0f} / {s['rss']['peak_after_find_kib'] / 1024:.0f} MiB" if s.get("rss") else "in server")
    row("S3 requests per step: mean / max",
        lambda s: f"{s['s3']['requests_per_step_mean']:.2f} / {max(s['s3']['requests_per_step_max'], s['s3']['paced_requests_per_step_max'])}" if s.get("s3") else "–")
    return ["measure"] + names, rows


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def text_table(header, rows):
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def plot(r, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stores = r["stores"]
    names = [s["name"] for s in stores]
    colors = ["#888888", "#c0504d", "#4f81bd", "#2e5d8f"][: len(names)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    mbps = [s["stream"]["mb_per_second"] for s in stores]
    a.bar(names, mbps, color=colors)
    a.set_yscale("log")
    a.set_ylabel("MB/s of log (log scale)")
    a.set_title("LogAppend throughput, 32 steps, 1 MiB batches")
    for i, v in enumerate(mbps):
        a.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    x = range(len(names))
    w = 0.38
    p50 = [s["paced"]["p50_ms"] for s in stores]
    p99 = [s["paced"]["p99_ms"] for s in stores]
    b.bar([i - w / 2 for i in x], p50, w, label="p50", color="#9bbb59")
    b.bar([i + w / 2 for i in x], p99, w, label="p99", color="#f79646")
    b.axhline(2, color="black", linestyle="--", linewidth=1, label="p99 target 2 ms")
    b.set_xticks(list(x), names)
    b.set_yscale("log")
    b.set_ylabel("ms (log scale)")
    b.set_title("LogAppend latency, 32 paced steps, archives uploading")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def criterion(dir_):
    """Criterion's point estimates (mean, ns) and throughput of each benchmark."""
    rows = []
    if not dir_ or not Path(dir_).is_dir():
        return rows
    for est in sorted(Path(dir_).glob("*/*/new/estimates.json")):
        bench = json.loads((est.parent / "benchmark.json").read_text())
        mean_ns = json.loads(est.read_text())["mean"]["point_estimate"]
        tp = bench.get("throughput") or {}
        per_s = ""
        if "Bytes" in tp:
            per_s = f"{tp['Bytes'] / (mean_ns / 1e9) / 1e6:.0f} MB/s"
        rows.append([f"{bench['group_id']}/{bench['function_id']}", fmt_ms(mean_ns / 1e6), per_s])
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--markdown")
    ap.add_argument("--plot")
    ap.add_argument("--criterion")
    ap.add_argument("--notes")
    ap.add_argument("--load-before", default="")
    ap.add_argument("--command", default="bench/run")
    args = ap.parse_args()

    r = json.loads(Path(args.results).read_text())
    m = machine()
    header, rows = tables(r)
    tgt = targets(r)
    crit = criterion(args.criterion)

    print(text_table(header, rows))
    print()
    print(text_table(["target", "measured", "limit", "result"],
                     [[n, v, lim, "met" if ok else "MISSED"] for n, v, lim, ok in tgt]))
    if crit:
        print()
        print(text_table(["micro-benchmark", "mean", "throughput"], crit))

    if args.plot:
        plot(r, args.plot)
    if args.markdown:
        sc = r["scale"]
        c = r["corpus"]
        busy = ""
        load_before = [float(x) for x in args.load_before.split()] if args.load_before else []
        if load_before and load_before[0] > 0.5 * int(m["nproc"]):
            busy = (f" **The machine was busy**: the 1-minute load average was {load_before[0]:.2f} "
                    f"before the run (other work on the same {m['nproc']} cores), "
                    "so absolute figures are pessimistic; ratios come from the same run.")
        md = [
            "# Benchmarks",
            "",
            "Woodpecker's built-in log stores and woodpecker-s3-logs, driven in one run with one workload by "
            f"`{args.command}` (harness: `bench/go`, report: `bench/report.py`). Generated on "
            f"{r['started_at'][:16].replace('T', ' ')} UTC{' (quick mode)' if r['quick'] else ''}; "
            f"the run took {r['wall_seconds']:.0f} s.",
            "",
            "## Machine",
            "",
            f"- {m['nproc']} CPUs ({m['model']}), {m['ram_gib']:.1f} GiB RAM, Linux {m['kernel']}, {r['go_version']}",
            f"- load average before the run: {args.load_before or 'n/a'}; after: {m['load']}.{busy}",
            "",
            "## Workload",
            "",
            f"- Corpus: {c['lines']:,} lines, {fmt_bytes(c['bytes'])} of real tool output made by `bench/corpus.sh` "
            f"({', '.join(c['files'])}).",
            f"- Saturated streaming: {sc['stream_steps']} steps of 500 to 30,000 lines (each a different slice of the "
            "corpus), 32 at a time, each sending agent batches of up to 1 MiB back to back, then StepFinished. "
            "Throughput counts log bytes (line data).",
            f"- Paced streaming: {sc['paced_seconds']} s of 32 concurrent steps, each sending 150 lines every 100 ms "
            "(ten times the agent's flush rate) and finishing after 3,000 lines, so archives are built and uploaded "
            "throughout. LogAppend latency is measured here.",
            f"- LogFind: finished steps of {', '.join(f'{n:,}' for n in sc['find_lines'])} lines (archived first for "
            f"the addon) and a running step of {sc['running_find_lines']:,} lines (still in the spool), median of "
            "3–20 calls, timed in the host including JSON decoding, as the server sees it.",
            f"- LogDelete of every streamed step. RSS with {' and '.join(str(n) for n in sc['many_steps'])} steps "
            f"running at once, {sc['many_steps_total_lines']:,} lines in 50-line batches, in fresh addon processes.",
            "- Stores: `file` = Woodpecker's file store, `sqlite` = its database store on SQLite (xorm v1.4.1, "
            "mattn/go-sqlite3 v1.14.50, Woodpecker's defaults), both re-stated in `bench/go/wpstores` "
            "and called in-process as the server does; `addon-local` / `addon-s3` = the release binary "
            "loaded through Woodpecker's addon client (go-plugin v1.8.0 net/rpc), archiving to a local "
            "directory / to SeaweedFS on 127.0.0.1 behind a request-counting proxy. Addon settings: "
            "FINALIZE_DELAY=200ms, IDLE_TIMEOUT=1h, defaults otherwise (zstd level 3).",
            "- CPU: the addon process (/proc/<pid>/stat) from the start of streaming until the archive is "
            "drained; for the built-in stores, the whole benchmark process over the same phase (they run "
            "inside the server, which also does the batching work the addon's host does).",
            "",
            "## Results",
            "",
            md_table(header, rows),
            "",
            "![throughput and latency](bench/benchmarks.png)",
            "",
            "## Targets (issue 4)",
            "",
            md_table(["target", "measured", "limit", "result"],
                     [[n, v, lim, "met" if ok else "**missed**"] for n, v, lim, ok in tgt]),
            "",
        ]
        s3 = next((s["s3"] for s in r["stores"] if s.get("s3")), None)
        if s3:
            md += [
                "S3 requests while streaming and archiving: " + ", ".join(f"{k} {v}" for k, v in sorted(s3["stream_and_archive_ops"].items()))
                + f"; during LogFind and LogDelete: " + ", ".join(f"{k} {v}" for k, v in sorted(s3["find_and_delete_ops"].items()))
                + ". Answers ≥ 400: " + (", ".join(f"{k}: {v}" for k, v in sorted(s3["failed_requests"].items())) or "none") + ".",
                "",
            ]
        if crit:
            md += ["## Micro-benchmarks (Criterion, `crates/benches`)", "",
                   md_table(["benchmark", "mean", "throughput"], crit), ""]
        if args.notes and Path(args.notes).is_file():
            md += [Path(args.notes).read_text().rstrip(), ""]
        met = sum(1 for t in tgt if t[3])
        md += [f"targets: {met} met, {len(tgt) - met} missed", ""]
        Path(args.markdown).write_text("\n".join(md))

    met = sum(1 for t in tgt if t[3])
    print(f"targets: {met} met, {len(tgt) - met} missed")


if __name__ == "__main__":
    main()
