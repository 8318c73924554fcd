"""Derived metrics and the Markdown / PNG renderings of a benchmark result."""
import numpy as np

import _cases
from _peers import LABELS, LIBS

QUICK_NOTE = ("**Quick run (smoke test):** the shapes are too small for these times to say how "
              "the libraries compare at real sizes, and for the uneven-length, inputs × 50 and "
              "memory figures to mean anything: those are left out. Run without --quick to "
              "measure.")
QUICK_CHART_NOTE = ("QUICK RUN: shapes too small to compare the libraries; uneven-length and "
                    "memory figures not meaningful. Run without --quick to measure.")


PEERS = ("torch", "onnxruntime", "jax", "numpy")  # "best peer" is the fastest of these
SMALL_BATCH = 16  # inference at batch <= this reads its weights every step: GB/s reported


def peaks(machine, threads_list):
    """({threads: peak GFLOP/s}, what it is): the measured FMA peak (bench/machine.py), else
    NumPy's sgemm, else nothing."""
    if machine and machine["fma_gflops"]:
        return ({t: machine["fma_gflops"][str(t)] for t in threads_list},
                "FMA peak (bench/_probe.c)")
    if machine:
        return ({t: machine["sgemm_gflops"][str(t)] for t in threads_list},
                f"NumPy sgemm {machine['sgemm_n']}³ (no C compiler for the FMA probe)")
    return {}, None


def bandwidth_limit(machine, threads, kib):
    """Matrix-vector read bandwidth (GB/s) at the smallest probed size holding `kib` KiB of
    weights (the largest size if none does), with that size; (None, None) if not measured."""
    table = (machine or {}).get("matvec_gbs", {}).get(str(threads))
    if not table:
        return None, None
    sizes = sorted(int(k) for k in table)
    size = next((k for k in sizes if k >= kib), sizes[-1])
    return table[str(size)], size


def derive(results, peaks, machine=None):
    """Add gflops, pct_peak, vs_torch, (rnnx) vs_best, (inference at batch <= SMALL_BATCH)
    weight_gbs and bandwidth_gbs, and (main variants) vs_base to the timed rows."""
    by_key = {(r["threads"], r["cell"], r["case"], r["phase"], r["variant"], r["lib"]): r
              for r in results if "median_ms" in r}
    for (threads, cell, case, phase, variant, lib), r in by_key.items():
        seconds = r["median_ms"] / 1e3
        r["gflops"] = r["gflop"] / seconds
        r["pct_peak"] = 100 * r["gflops"] / peaks[threads] if threads in peaks else None
        torch = by_key.get((threads, cell, case, phase, variant, "torch"))
        r["vs_torch"] = r["median_ms"] / torch["median_ms"] if torch else None
        peers = [by_key[k] for k in ((threads, cell, case, phase, variant, p) for p in PEERS)
                 if k in by_key and by_key[k].get("agrees", True)]
        if lib == "rnnx" and peers:
            best = min(peers, key=lambda p: p["median_ms"])
            r["best_peer"], r["vs_best"] = best["lib"], r["median_ms"] / best["median_ms"]
        if phase == "infer" and r.get("batch", SMALL_BATCH + 1) <= SMALL_BATCH:
            r["weight_gbs"] = r["weight_gb"] / seconds
            r["bandwidth_gbs"], r["bandwidth_kib"] = bandwidth_limit(
                machine, threads, r["recurrent_kib"])
        if variant == "main" and len(_cases.variants(_cases.CASES[case])) > 1:
            base_name = _cases.variants(_cases.CASES[case])[1].name
            base = by_key.get((threads, cell, case, phase, base_name, lib))
            r["vs_base"] = r["median_ms"] / base["median_ms"] if base else None


def _fmt(value, digits=3):
    if value is None:
        return "–"
    if value >= 10 ** digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _table(header, rows, align):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _time_cell(r):
    if r is None:
        return "–"
    if "error" in r:
        return "error"
    text = _fmt(r["median_ms"])
    if r["lib"] != "torch" and r.get("vs_torch") is not None:
        text += f" ({r['vs_torch']:.2f}×)"
    return text + (" ⚠" if r.get("agrees") is False else "")


def _workers_lines(workers):
    """Which worker hosted what, and which of rnnx / torch / onnxruntime / jax it imported."""
    if not workers:
        return []
    lines = ["Workers (libraries hosted: modules found in sys.modules at the end):"]
    for w in workers:
        imported = [m for m, yes in w["imported"].items() if yes]
        lines.append(f"- threads {w['threads']}, {', '.join(LABELS[lib] for lib in w['libs'])}: "
                     f"imported {', '.join(imported) or 'none of rnnx, torch, onnxruntime, jax'}"
                     + (" — rnnx imported by a peer's worker!" if "rnnx" in imported
                        and len(w["libs"]) == 1 and not w["libs"][0].startswith("rnnx")
                        else "")
                     + (f"; env {', '.join(f'{k}={v}' for k, v in w['env'].items())}"
                        if w["env"] else ""))
    return lines


def markdown(data):
    """The whole report as Markdown."""
    meta, results = data["meta"], data["results"]
    libs = [lib for lib in LIBS if any(r["lib"] == lib for r in results)]
    index = {(r["threads"], r["cell"], r["case"], r["phase"], r["variant"], r["lib"]): r
             for r in results}
    keys = sorted({(r["cell"], r["case"], r["phase"]) for r in results},
                  key=lambda k: (_cases.CELLS.index(k[0]), list(_cases.CASES).index(k[1]),
                                 _cases.PHASES.index(k[2])))
    threads_list = meta["threads"]
    caveat = [QUICK_NOTE, ""] if meta["quick"] else []  # before every table of a quick run
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    mode = meta.get("mode", "separate")
    how = ("each library in a worker process of its own, with its own defaults and the same "
           "thread count; turns alternating between the processes" if mode == "separate" else
           "**in-process mode**: every library in one process (one library's settings and "
           "idle threads can affect another's; see bench/README.md)")
    out = [f"# rnnx benchmark ({meta['date']})", "",
           f"{meta['cpu']}, {meta['cores']} cores; {versions}.",
           f"{'Quick' if meta['quick'] else 'Full'} run, {how}. Each figure is the median "
           f"over up to {meta['repeat']} rounds of the median of a turn of back-to-back calls "
           f"(about {meta.get('turn_s', 0.05) * 1e3:.0f} ms, at least 1 call) after "
           f"{meta['warmup']} warm-up call(s); float32; times in ms.", "",
           f"1-minute load average {meta['load_avg']['start']:.2f} at the start, "
           f"{meta['load_avg']['end']:.2f} at the end"
           + (" (other processes were busy: expect noise, see README)"
              if meta["load_avg"]["start"] > 0.5 else "") + ".", ""]
    out += _workers_lines(meta.get("workers", [])) + [""]
    if data.get("machine"):
        import machine as _machine
        out += [_machine.markdown(data["machine"]), ""]
    for t in threads_list:
        out += [f"## Time per call, threads = {t}", "",
                "Median ms; in parentheses the time relative to PyTorch's (< 1: faster). "
                "GFLOP: GEMM FLOPs per call (training = 3 × forward). "
                "rnnx / best: rnnx's time over the fastest peer's (PyTorch, ONNX Runtime, JAX, "
                "NumPy). % peak: rnnx's GFLOP/s over the "
                f"{meta.get('peak_source') or 'peak (not measured)'} at {t} thread(s). "
                "Weights GB/s (inference at batch ≤ 16): weight bytes a call must read "
                "(the recurrent weights at every step, the input weights once) per second, "
                "rnnx's and the best peer's, beside the measured matrix-vector bandwidth for "
                "that many recurrent weights. ⚠: output differs from rnnx's.", ""] + caveat
        rows = []
        for cell, case, phase in keys:
            main = {lib: index.get((t, cell, case, phase, "main", lib)) for lib in libs}
            rx = main.get("rnnx") or {}
            any_row = next((r for r in main.values() if r), None)
            best = main.get(rx.get("best_peer")) or {}
            bw = "–"
            if rx.get("weight_gbs"):
                bw = f"{rx['weight_gbs']:.3g} / {_fmt(best.get('weight_gbs'))}"
                if rx.get("bandwidth_gbs"):
                    bw += f" (limit {rx['bandwidth_gbs']:.3g})"
            rows.append([cell, case, phase, _fmt(any_row["gflop"]) if any_row else "–"]
                        + [_time_cell(main[lib]) for lib in libs]
                        + [f"**{rx['vs_best']:.2f}** ({LABELS[rx['best_peer']]})"
                           if rx.get("vs_best") else "–",
                           _fmt(rx.get("gflops")), _fmt(rx.get("pct_peak"), 2), bw])
        out += [_table(["cell", "case", "phase", "GFLOP"] + [LABELS[lib] for lib in libs]
                       + ["rnnx / best", "rnnx GFLOP/s", "rnnx % peak",
                          "weights GB/s rnnx / best"], rows,
                       "lll" + "r" * (len(libs) + 5)), ""]
        for kind, title, note in (
                ("uneven", "Uneven lengths: time / time of the same batch at full lengths",
                 "Lengths spread evenly over 1..T, so sum(lengths) ≈ T·B/2: a packed "
                 "implementation should approach 0.5, a padded one stays near 1."),
                ("denormal", "Inputs × 50: time / time with the same inputs × 1",
                 "Saturated gates push values into the denormal range; 1 means no slowdown.")):
            cases = [k for k in keys if _cases.CASES[k[1]].kind == kind]
            if cases and not meta["quick"]:
                rows = [[cell, case, phase] + [
                    _fmt((index.get((t, cell, case, phase, "main", lib)) or {}).get("vs_base"))
                    for lib in libs] for cell, case, phase in cases]
                out += [f"### {title} (threads = {t})", "", note, "",
                        _table(["cell", "case", "phase"] + [LABELS[lib] for lib in libs], rows,
                               "lll" + "r" * len(libs)), ""]
    if len(threads_list) > 1:
        lo, hi = threads_list[0], threads_list[-1]
        rows = []
        for cell, case, phase in keys:
            cells = []
            for lib in libs:
                a = index.get((lo, cell, case, phase, "main", lib), {}).get("median_ms")
                b = index.get((hi, cell, case, phase, "main", lib), {}).get("median_ms")
                cells.append(_fmt(a / b) if a and b else "–")
            rows.append([cell, case, phase] + cells)
        out += [f"## Speed-up from {lo} to {hi} threads (time at {lo} / time at {hi})", ""] + \
            caveat + [_table(["cell", "case", "phase"] + [LABELS[lib] for lib in libs], rows,
                       "lll" + "r" * len(libs)), ""]
    if data["memory"] and not meta["quick"]:
        mem = {(m["cell"], m["case"], m["lib"]): m for m in data["memory"]}
        rows = []
        for cell, case, phase in keys:
            if phase != "train" or (cell, case, "rnnx") not in mem:
                continue
            a = mem[cell, case, "rnnx"]["peak_mb"]
            b = mem.get((cell, case, "torch"), {}).get("peak_mb")
            rows.append([cell, case, _fmt(a), _fmt(b), _fmt(a / b if b else None)])
        out += ["## Peak memory of one training step (MB)", "",
                "Peak RSS during one forward + backward minus RSS before it, each library and "
                f"case in a fresh process ({data['memory'][0]['method']}).", "",
                _table(["cell", "case", "rnnx", "PyTorch", "rnnx / PyTorch"], rows, "llrrr"), ""]
    notes = [f"- {LABELS[r['lib']]} on {r['cell']} {r['case']} {r['phase']} "
             f"({r['variant']}, threads={r['threads']}): {r['error']}"
             for r in results if "error" in r]
    notes += [f"- {LABELS.get(lib, lib)} not run: {why}" for lib, why in meta["skipped"].items()]
    if notes:
        out += ["## Notes", ""] + notes + [""]
    detail = [[str(r["threads"]), r["cell"], r["case"], r["phase"], r["variant"],
               LABELS[r["lib"]], _fmt(r.get("median_ms")), _fmt(r.get("min_ms")),
               _fmt(r.get("vs_torch")), _fmt(r.get("gflops")), _fmt(r.get("pct_peak"), 2),
               _fmt(r.get("weight_gbs")),
               f"{r['max_rel_err']:.1e}" if "max_rel_err" in r else "–"]
              for r in results]
    out += ["<details><summary>All measurements</summary>", ""] + caveat + [
            _table(["threads", "cell", "case", "phase", "variant", "library", "median ms",
                    "min ms", "× PyTorch", "GFLOP/s", "% peak", "weights GB/s",
                    "rel. err vs rnnx"], detail, "llllll" + "r" * 7), "", "</details>", ""]
    return "\n".join(out)


def plot(data, path):
    """Bar chart of time relative to PyTorch (log scale, ticks as ratios), one panel per
    thread count, the legend beside the bars; a quick run says so in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    results = [r for r in data["results"] if r["variant"] == "main" and r.get("vs_torch")]
    threads_list = data["meta"]["threads"]
    libs = [lib for lib in LIBS if lib != "torch" and any(r["lib"] == lib for r in results)]
    keys = list(dict.fromkeys((r["cell"], r["case"], r["phase"]) for r in results))
    fig, axes = plt.subplots(len(threads_list), 1, squeeze=False, constrained_layout=True,
                             figsize=(max(9, 0.45 * len(keys) + 3), 4.5 * len(threads_list)))
    ratios = [r["vs_torch"] for r in results]
    ticks = [m * 10.0 ** e for e in range(-3, 3) for m in (1, 2, 5)]  # 0.001× .. 500×
    ticks = [v for v in ticks if min(ratios) / 2 <= v <= max(max(ratios), 1) * 2]
    width = 0.8 / max(len(libs), 1)
    for ax, t in zip(axes[:, 0], threads_list):
        index = {(r["cell"], r["case"], r["phase"], r["lib"]): r["vs_torch"]
                 for r in results if r["threads"] == t}
        for j, lib in enumerate(libs):
            values = [index.get(k + (lib,), np.nan) for k in keys]
            ax.bar(np.arange(len(keys)) + (j - (len(libs) - 1) / 2) * width, values, width,
                   label=LABELS[lib])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.FixedLocator(ticks))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.set_ylabel("time / PyTorch's time")
        ax.set_title(f"threads = {t} (lower is faster; 1× = PyTorch)")
        ax.set_xticks(np.arange(len(keys)))
        ax.set_xticklabels([" ".join(k) for k in keys], rotation=70, ha="right", fontsize=8)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    if data["meta"]["quick"]:
        fig.suptitle(QUICK_CHART_NOTE, color="firebrick", fontsize=9, wrap=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
