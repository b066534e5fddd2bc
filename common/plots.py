"""Pictures from a directory of records (`python -m common.report DIR --plots OUT`).

    convergence-<model>.png   top-1 of each evaluation against the step, one line per
                              run, and the recipe's target
    train-<record>.png        the loss and the step rate of each progress line over the
                              run, the warm-up marked and the clocks' p_train beside it
    scaling.png               p_core per device against the number of devices, one line
                              per case, and the ideal: the one-device p_core kept at
                              every size
    monitor-<record>.png      the hardware monitor over the run: device power, device
                              use and host CPU, device and host memory; the timed
                              region (or each inference pass) shaded

matplotlib is needed here only; the runs never import it.
"""
from __future__ import annotations

import os

from common import scaling
from common.errors import UserError


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plots: needs matplotlib, which is not installed here; "
                        "pip install matplotlib") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _name(rec):
    return os.path.splitext(os.path.basename(rec.get("_path") or "record.json"))[0]


def _label(rec):
    hp = ",".join(f"{k}={v}" for k, v in (rec.get("fix_hp") or {}).items())
    return f"{rec['device']['label']} {rec['config']} {rec['precision']}" + (f" {hp}" if hp else "")


def _column(series, name):
    i = series["columns"].index(name)
    return [row[i] for row in series["rows"]]


def _points(xs, ys):
    """(xs, ys) without the points whose y is missing."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def _save(plt, fig, out_dir, name):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def convergence(plt, records, out_dir):
    paths = []
    trained = [r for r in records if r["case"] == "train" and r.get("evals")]
    for model in sorted({r["model"] for r in trained}):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        targets = set()
        for rec in (r for r in trained if r["model"] == model):
            evals = [e for e in rec["evals"] if e.get("top1") is not None]
            ax.plot([e["step"] for e in evals], [e["top1"] for e in evals], marker="o",
                    label=_label(rec))
            targets.add((rec.get("args") or {}).get("target_acc"))
        for target in sorted(t for t in targets if t):
            ax.axhline(target, color="black", linestyle="--", label=f"target {target:g}%")
        ax.set(title=f"{model}: top-1 per evaluation", xlabel="optimizer step",
               ylabel="top-1 (%)")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        paths.append(_save(plt, fig, out_dir, f"convergence-{model}.png"))
    return paths


def training(plt, records, out_dir):
    paths = []
    for rec in records:
        steps = ((rec["figures"].get("history") or {}).get("steps") or {})
        if rec["case"] != "train" or not steps.get("rows"):
            continue
        fig, (loss_ax, rate_ax) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
        step = _column(steps, "step")
        loss_ax.plot(*_points(step, _column(steps, "loss")), marker=".")
        loss_ax.set(title=f"{rec['model']} training, {_label(rec)}", ylabel="loss")
        rate_ax.plot(*_points(step, _column(steps, "img_per_s")), marker=".",
                     label="progress lines (images since the last line / its seconds)")
        if rec["figures"].get("p_train"):
            rate_ax.axhline(rec["figures"]["p_train"], color="black", linestyle="--",
                            label=f"p_train {rec['figures']['p_train']:.1f} img/s (clocks)")
        for ax in (loss_ax, rate_ax):
            if rec.get("warmup_steps"):
                ax.axvline(rec["warmup_steps"], color="grey", linestyle=":")
            ax.grid(alpha=0.3)
        rate_ax.set(xlabel="optimizer step (dotted: end of warm-up)", ylabel="images/s")
        rate_ax.legend(fontsize="small")
        paths.append(_save(plt, fig, out_dir, f"train-{_name(rec)}.png"))
    return paths


def scaling_chart(plt, records, out_dir):
    rows = scaling.scaling_rows(records)
    cases = {}
    for row in rows:  # one line per like-with-like case, as the scaling table's rows
        cases.setdefault(row["case"], []).append(row)
    cases = {case: sized for case, sized in cases.items() if len(sized) > 1}
    if not cases:
        return []
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for _, sized in sorted(cases.items(), key=lambda kv: str(kv[0])):
        sized.sort(key=lambda r: r["devices"])
        devices = [r["devices"] for r in sized]
        r0 = sized[0]
        line, = ax.plot(devices, [r["per_device"] for r in sized], marker="o",
                        label=f"{r0['model']} {r0['device']} {r0['precision']} bs {r0['bs']}")
        one = next((r["p_core"] for r in sized if r["devices"] == 1), None)
        if one:  # ideal scaling: every device as fast as a lone one
            ax.plot(devices, [one] * len(devices), color=line.get_color(), linestyle="--",
                    label=f"ideal: the 1x1 run's {one:.0f} img/s on every device")
        for r in sized:
            ax.annotate(r["config"], (r["devices"], r["per_device"]),
                        textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set(title="Scaling: p_core per device", xlabel="devices", ylabel="images/s per device",
           xscale="log", ylim=(0, None))
    ax.set_xticks(sorted({r["devices"] for s in cases.values() for r in s}))
    ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    # beside the axes, not over the lines: a few cases' legends cover most of a plot
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    return [_save(plt, fig, out_dir, "scaling.png")]


def _windows(rec):
    """(label, [start, end]) of the shaded windows: the timed region or each pass."""
    h = rec["figures"].get("history") or {}
    named = (("timed region", h.get("timed_s")), ("validation pass", h.get("val_s")),
             ("inference pass", h.get("infer_s")))
    return [(label, w) for label, w in named if w]


def _monitor_reason(rec):
    mon = rec["figures"].get("monitor") or {}
    parts = [mon] if rec["case"] == "train" else [mon.get("val") or {}]
    return next((p.get("reason") for p in parts if p.get("reason")), None)


def monitor(plt, records, out_dir):
    paths = []
    for rec in records:
        series = (rec["figures"].get("history") or {}).get("monitor")
        if not series or not series.get("rows"):
            continue
        t = _column(series, "t_s")
        panels = (("device power (W, node 0)", [("power", "power_w")]),
                  ("use (%)", [("device", "util_pct"), ("host CPU", "host_cpu_pct")]),
                  ("memory (GiB)", [("device", "device_mem_gib"), ("host", "host_mem_gib")]))
        fig, axes = plt.subplots(3, 1, sharex=True, figsize=(8, 7))
        for ax, (ylabel, lines) in zip(axes, panels):
            drawn = False
            for label, column in lines:
                xs, ys = _points(t, _column(series, column))
                if ys:
                    ax.plot(xs, ys, label=label)
                    drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center",
                        color="grey")
            for (label, (t0, t1)), color in zip(_windows(rec), ("C2", "C3", "C4")):
                ax.axvspan(t0, t1, color=color, alpha=0.15, label=label)
            ax.set(ylabel=ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small", loc="upper left")
        reason = _monitor_reason(rec)
        title = f"{rec['model']} {rec['case']}, {_label(rec)}: hardware monitor"
        axes[0].set_title(title + (f"\n(empty device cells: {reason[:90]})" if reason else ""),
                          fontsize="medium")
        axes[-1].set(xlabel="seconds from the start of the run's loop")
        paths.append(_save(plt, fig, out_dir, f"monitor-{_name(rec)}.png"))
    return paths


def write_all(records, out_dir):
    """Every picture the records allow, written to out_dir; returns their paths."""
    plt = pyplot()
    os.makedirs(out_dir, exist_ok=True)
    return [path for draw in (convergence, training, scaling_chart, monitor)
            for path in draw(plt, records, out_dir)]
