"""The evaluation report: `report.md` with PNG plots, from evaluation results (and ablations, when run).

    write_report(results, out_dir, ablations=None, title=...) -> out_dir/report.md

The page holds the systems' metrics on all tasks and by task type, Hit@k for k = 1..top-k, the comparisons the
SkillRouter paper makes wherever both sides were evaluated (full text against name and description, zero-shot
against fine-tuned, a first stage against hybrid, each first stage against itself reranked), and the ablations.
Plots: `metrics.png` (bars per system), `hit_at_k.png` (curves per system, by task type), `ablations.png`.
`skillrouter report --run DIR` rebuilds it from a run's saved results (`read_run`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from skillrouter.common.tables import markdown_table
from skillrouter.evaluation.ablation_results import Ablation, read_ablations, report_notes
from skillrouter.evaluation.benchmark import load_eval_core
from skillrouter.evaluation.metrics import SUBSETS
from skillrouter.evaluation.runner import EvalResult, read_result
from skillrouter.models.loading import export_info

REPORT_FILE = "report.md"
SYSTEM_METRICS = ("Hit@1", "MRR@10", "nDCG@3", "nDCG@10", "Recall@10", "Recall@20", "Recall@50", "FullCoverage@5",
                  "FullCoverage@10")
PLOT_METRICS = ("Hit@1", "MRR@10", "nDCG@10", "Recall@20", "FullCoverage@10")
DELTA_METRICS = ("Hit@1", "MRR@10", "nDCG@10", "Recall@20")
SUBSET_METRICS = ("Hit@1", "MRR@10", "nDCG@10", "Recall@10", "FullCoverage@5", "FullCoverage@10")
HIT_KS = (1, 3, 5, 10, 20, 50)
SHORT = {"FullCoverage@5": "FC@5", "FullCoverage@10": "FC@10", "Recall@10": "R@10", "Recall@20": "R@20",
         "Recall@50": "R@50"}
SUBSET_NAMES = {"all": "all tasks", "single": "single-skill tasks", "multi": "multi-skill tasks"}
ABLATION_HINT = ("No ablations in this report yet. `skillrouter ablations --config PROFILE` (or "
                 "`python jobs/run_ablations.py --config PROFILE`) reuses this run's corpus, queries and mined "
                 "groups, trains only the variants the paper's ablations need into `RUN_DIR/ablations/<variant>/` "
                 "(name and description against the full body, listwise against pointwise reranking, with and "
                 "without false-negative filtering), evaluates them, and rewrites this page with an ablations "
                 "section.")





def pct(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def delta(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:+.1f}"


def _metric(result: EvalResult, name: str, subset: str = "all") -> float:
    return result.metrics.get(subset, {}).get(name, float("nan"))


def _description(system: str) -> str:
    from skillrouter.retrieval.systems import get_system

    try:
        return get_system(system).description
    except ValueError:
        return ""


def _bold_best(values: list[float]) -> list[str]:
    finite = [v for v in values if not math.isnan(v)]
    best = max(finite, default=None)
    return [f"**{pct(v)}**" if len(values) > 1 and v == best else pct(v) for v in values]


def systems_table(results: Sequence[EvalResult], metrics: Sequence[str] = SYSTEM_METRICS) -> str:
    """All tasks, one row per system, the best value of each column in bold; then what each system is."""
    columns = [_bold_best([_metric(r, m) for r in results]) for m in metrics]
    rows = [[f"`{r.system}`", *(col[i] for col in columns), f"{r.seconds:.1f}"] for i, r in enumerate(results)]
    table = markdown_table(["system", *(SHORT.get(m, m) for m in metrics), "seconds"], rows,
                           right=[False, *([True] * len(metrics)), True])
    described = [f"- `{r.system}`: {d}" for r in results if (d := _description(r.system))]
    return "\n".join([table, "", *described])


def subsets_table(results: Sequence[EvalResult], metrics: Sequence[str] = SUBSET_METRICS) -> str:
    rows = [[f"`{r.system}`", subset, int(r.metrics[subset]["n"]), *(pct(_metric(r, m, subset)) for m in metrics)]
            for r in results for subset in SUBSETS[1:] if subset in r.metrics]
    return markdown_table(["system", "tasks", "n", *(SHORT.get(m, m) for m in metrics)], rows,
                          right=[False, False, True, *([True] * len(metrics))])


def hit_table(results: Sequence[EvalResult], ks: Sequence[int] = HIT_KS) -> str:
    rows = []
    for r in results:
        curve = r.hit_at_k.get("all", [])
        rows.append([f"`{r.system}`", *(pct(curve[k - 1]) if k <= len(curve) else "-" for k in ks)])
    return markdown_table(["system", *(f"Hit@{k}" for k in ks)], rows, right=[False, *([True] * len(ks))])


def paper_comparisons(systems: Sequence[str], retrieve_k: int | None = 20) -> list[tuple[str, str, str]]:
    """(question, reference, changed) for each comparison of the paper whose two systems were both evaluated."""
    have = set(systems)
    pairs = [("name + description instead of the full text (BM25)", "bm25", "bm25-nd"),
             ("name + description instead of the full text (zero-shot encoder)", "minilm", "minilm-nd"),
             ("name + description instead of the full text (fine-tuned encoder)", "finetuned", "finetuned-nd"),
             ("fine-tuning the encoder", "minilm", "finetuned")]
    for s in systems:
        if s.startswith("hybrid"):
            dense = "minilm" if s == "hybrid" else s.removeprefix("hybrid:").partition("+")[0]
            plus = s.partition("+")[1] + s.partition("+")[2]
            pairs.append((f"fusing {dense} with BM25 (hybrid)", dense + plus, s))
            pairs.append(("fusing BM25 with a dense encoder (hybrid)", "bm25" + plus, s))
        first, plus, second = s.partition("+")
        if plus:
            model = "the trained reranker" if second == "reranker" else second.removeprefix("rerank:")
            pairs.append((f"reranking the top {retrieve_k or 'k'} with {model}", first, s))
    seen, out = set(), []
    for question, a, b in pairs:
        if a in have and b in have and (a, b) not in seen:
            seen.add((a, b))
            out.append((question, a, b))
    return out


def comparisons_table(results: Sequence[EvalResult], retrieve_k: int | None = 20) -> str | None:
    by_name = {r.system: r for r in results}
    pairs = paper_comparisons(list(by_name), retrieve_k)
    if not pairs:
        return None
    rows = [[question, f"`{a}`", f"`{b}`",
             *(delta(_metric(by_name[b], m) - _metric(by_name[a], m)) for m in DELTA_METRICS)]
            for question, a, b in pairs]
    return markdown_table(["what changes", "from", "to", *(f"Δ {SHORT.get(m, m)}" for m in DELTA_METRICS)], rows,
                          right=[False, False, False, *([True] * len(DELTA_METRICS))])


def ablation_table(ablation: Ablation) -> str:
    """One row per variant with its metrics and its differences from the row it is compared with."""
    refs = [ablation.reference(i) for i in range(len(ablation.rows))]
    named = any(ref not in (None, 0) for ref in refs)  # say what each row is compared with unless it is row 0
    rows = []
    for (label, r), ref in zip(ablation.rows, refs):
        values = [pct(_metric(r, m)) for m in PLOT_METRICS]
        base = ablation.rows[ref][1] if ref is not None else None
        deltas = [delta(_metric(r, m) - _metric(base, m)) if base else "" for m in DELTA_METRICS[:2]]
        against = [ablation.rows[ref][0] if ref is not None else ""] if named else []
        rows.append([label, f"`{r.system}`", *values, *deltas, *against])
    headers = ["variant", "system", *(SHORT.get(m, m) for m in PLOT_METRICS),
               *(f"Δ {SHORT.get(m, m)}" for m in DELTA_METRICS[:2]), *(["Δ against"] if named else [])]
    return markdown_table(headers, rows, right=[False, False, *([True] * (len(PLOT_METRICS) + 2)),
                                                *([False] if named else [])])


# -- plots ---------------------------------------------------------------------------------------------------------


def _styles(systems: Sequence[str]) -> dict[str, dict]:
    """One colour per first stage; its reranked variants share it, with dashes and hatching."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    bases: list[str] = []
    for s in systems:
        base = s.partition("+")[0]
        if base not in bases:
            bases.append(base)
    return {s: {"color": palette[bases.index(s.partition("+")[0]) % len(palette)],
                "reranked": bool(s.partition("+")[1])} for s in systems}


def plot_metrics(results: Sequence[EvalResult], path: Path, metrics: Sequence[str] = PLOT_METRICS) -> Path:
    """Grouped bars: one group per metric, one bar per system (all tasks)."""
    styles = _styles([r.system for r in results])
    n = len(results)
    fig = Figure(figsize=(max(8.0, 1.2 + len(metrics) * (0.45 + 0.32 * n)), 4.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(n, 1)
    for i, r in enumerate(results):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(metrics))]
        ys = [100 * _metric(r, m) for m in metrics]
        style = styles[r.system]
        bars = ax.bar(xs, ys, width * 0.92, label=r.system, color=style["color"],
                      hatch="///" if style["reranked"] else None, edgecolor="white" if not style["reranked"] else
                      "black", linewidth=0.4)
        if n <= 8:
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(metrics)), [SHORT.get(m, m) for m in metrics])
    ax.set_ylim(0, 108)
    ax.set_ylabel("score, % (Hit, Recall, Coverage: of tasks)")
    ax.set_title(f"Metrics per system, all tasks ({_task_count(results)})")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.savefig(path, dpi=130)
    return path


def _task_count(results: Sequence[EvalResult]) -> str:
    n = {int(r.metrics["all"]["n"]) for r in results}
    return f"{n.pop()} tasks" if len(n) == 1 else "tasks per benchmark"


def plot_hit_curves(results: Sequence[EvalResult], path: Path, retrieve_k: int | None = 20) -> Path:
    """Hit@k for k = 1..top-k, one line per system (reranked: dashed), one panel per task type."""
    styles = _styles([r.system for r in results])
    subsets = [s for s in SUBSETS if any(r.hit_at_k.get(s) for r in results)]
    fig = Figure(figsize=(4.6 * len(subsets) + 2.2, 4.4), layout="constrained")
    axes = fig.subplots(1, len(subsets), sharey=True, squeeze=False)[0]
    # systems that crowd near the top get the axis to themselves: it starts 10 points under the lowest Hit@1
    lowest = min((100 * r.hit_at_k[s][0] for r in results for s in subsets if r.hit_at_k.get(s)), default=0.0)
    floor = max(0.0, 10 * (lowest // 10) - 10)
    for ax, subset in zip(axes, subsets):
        for r in results:
            curve = r.hit_at_k.get(subset)
            if not curve:
                continue
            style = styles[r.system]
            ax.plot(range(1, len(curve) + 1), [100 * v for v in curve], color=style["color"],
                    linestyle="--" if style["reranked"] else "-", linewidth=1.6, label=r.system)
        if retrieve_k:
            ax.axvline(retrieve_k, color="grey", linewidth=0.8, linestyle=":")
            ax.text(retrieve_k, floor + 2, f" reranked\n top {retrieve_k}", color="grey", fontsize=7, va="bottom")
        ax.set_xscale("log")
        ticks = [k for k in (1, 2, 3, 5, 10, 20, 50, 100) if k <= max(len(r.hit_at_k.get(subset, [])) for r in results)]
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        n = next((int(r.metrics[subset]["n"]) for r in results if subset in r.metrics), 0)
        ax.set_title(f"{SUBSET_NAMES[subset]} (n={n})")
        ax.set_xlabel("k")
        ax.grid(alpha=0.3)
        ax.set_ylim(floor, 101)
    axes[0].set_ylabel("Hit@k: a needed skill in the top k (%)" + (f", axis from {floor:.0f}" if floor else ""))
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.savefig(path, dpi=130)
    return path


def plot_ablations(ablations: Sequence[Ablation], path: Path, metrics: Sequence[str] = ("Hit@1", "MRR@10",
                                                                                         "nDCG@10")) -> Path:
    """One panel per ablation, stacked: horizontal bars of a few metrics per variant, the reference on top."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors
    heights = [0.35 + 0.42 * len(a.rows) for a in ablations]
    fig = Figure(figsize=(9.0, sum(heights) + 0.55 * len(ablations) + 0.4), layout="constrained")
    axes = fig.subplots(len(ablations), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, ablation in zip(axes, ablations):
        labels = [label for label, _ in ablation.rows]
        height = 0.8 / len(metrics)
        for j, m in enumerate(metrics):
            ys = [i - 0.4 + height * (j + 0.5) for i in range(len(labels))]
            values = [100 * _metric(r, m) for _, r in ablation.rows]
            bars = ax.barh(ys, values, height * 0.92, color=colors[j], label=m)
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 110)
        ax.set_title(ablation.question, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].legend(loc="lower left", bbox_to_anchor=(1.0, 0.0), fontsize=8, frameon=False)
    axes[-1].set_xlabel("% of tasks (nDCG: %)", fontsize=8)
    fig.savefig(path, dpi=130)
    return path


# -- the page ------------------------------------------------------------------------------------------------------


def chance_hit1(result: EvalResult, retrieve_k: int | None = 20) -> tuple[int, float] | None:
    """(k, Hit@1 of a random order of the top k) for a reranked system: Hit@k / k. Reranking only permutes the
    first stage's top k, so the reranked system's own Hit@k is its first stage's."""
    curve = result.hit_at_k.get("all", [])
    k = min(retrieve_k or len(curve), len(curve))
    return (k, curve[k - 1] / k) if k else None


def _at_chance(result: EvalResult, retrieve_k: int | None) -> bool:
    chance = chance_hit1(result, retrieve_k)
    return chance is not None and _metric(result, "Hit@1") < 2 * chance[1]


def _chance_note(label: str, result: EvalResult, retrieve_k: int | None) -> str:
    k, hit = chance_hit1(result, retrieve_k)
    return (f"{label}: `{result.system}` ranks at about chance (a random order of its top {k} scores {pct(hit)} at "
            "Hit@1), so this row shows an untrained reranker, not its loss.")


def reranker_warnings(results: Sequence[EvalResult], retrieve_k: int | None = 20) -> list[str]:
    """A line for each reranked system that ranks below its own first stage at Hit@1, saying whether it ranks at
    chance (it has learned nothing of this task) or above (it has learned something else)."""
    by_name = {r.system: r for r in results}
    out = []
    for r in results:
        first, plus, _ = r.system.partition("+")
        if not plus or first not in by_name or _metric(r, "Hit@1") >= _metric(by_name[first], "Hit@1"):
            continue
        line = (f"`{r.system}` ranks below its first stage: Hit@1 {pct(_metric(r, 'Hit@1'))} against "
                f"{pct(_metric(by_name[first], 'Hit@1'))} for `{first}` alone.")
        chance = chance_hit1(r, retrieve_k)
        if chance:
            line += (f" A random order of `{first}`'s top {chance[0]} scores about {pct(chance[1])}: " +
                     ("this reranker ranks at chance, it has not learned the task." if _at_chance(r, retrieve_k)
                      else "this reranker learned something, but not this benchmark's requests."))
        out.append(line)
    return out


def write_report(results: Sequence[EvalResult], out_dir: str | Path, ablations: Sequence[Ablation] | None = None,
                 title: str = "skillrouter evaluation", notes: Sequence[str] = (), retrieve_k: int | None = 20) -> Path:
    """Write `report.md` and its plots into `out_dir`; returns the path of `report.md`.

    `results`: one `EvalResult` per system, in the order to show them (`evaluate_system` or `read_result`).
    `ablations`: the paper's ablations as run by `skillrouter ablations` (`evaluation.ablations`); without them
    the page says how to add them. `notes`: lines shown under the title (the run, the profile). `retrieve_k`: the
    reranker's candidate count, marked on the Hit@k plot."""
    if not results:
        raise ValueError("no evaluation results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = list(results)
    first = results[0]
    benchmarks = sorted({r.benchmark for r in results})
    m = first.metrics
    pool = f", {first.pool_size:,} skills in the pool" if first.pool_size else ""
    lines = [f"# {title}", "",
             f"Benchmark `{', '.join(benchmarks)}`: {int(m['all']['n'])} tasks ({int(m['single']['n'])} "
             f"single-skill, {int(m['multi']['n'])} multi-skill){pool}. Every figure is a percentage over tasks "
             f"(nDCG: graded, linear gain). {len(results)} systems, each run by `skillrouter eval --system NAME` "
             "through the first stage and reranking code that serving runs.", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    plot_metrics(results, out / "metrics.png")
    lines += ["## Systems", "", systems_table(results), "", "![Metrics per system](metrics.png)", ""]
    warnings = reranker_warnings(results, retrieve_k)
    if warnings:
        lines += ["**Warning.**", ""] + [f"- {w}" for w in warnings] + [""]
    comparisons = comparisons_table(results, retrieve_k)
    if comparisons:
        lines += ["## The paper's comparisons", "",
                  "Each row: the change from one evaluated system to another, in points (all tasks).", "",
                  comparisons, ""]
    lines += ["## By task type", "", subsets_table(results), "",
              "## Hit@k", "",
              "The share of tasks with a needed skill in the top k. At k = 20 it bounds what a reranker of the top "
              "20 can reach at Hit@1.", "", hit_table(results), "",
              "![Hit@k per system](hit_at_k.png)", ""]
    plot_hit_curves(results, out / "hit_at_k.png", retrieve_k)
    lines += ["## Ablations", ""]
    if ablations:
        for a in ablations:
            lines += [f"### {a.question}", "", ablation_table(a), ""]
            remarks = [*a.notes, *(_chance_note(label, r, retrieve_k) for label, r in a.rows
                                   if "+" in r.system and _at_chance(r, retrieve_k))]
            lines += [f"- {n}" for n in remarks] + ([""] if remarks else [])
        plot_ablations(list(ablations), out / "ablations.png")
        lines += ["![Ablations](ablations.png)", ""]
    else:
        (out / "ablations.png").unlink(missing_ok=True)
        lines += [ABLATION_HINT, ""]
    missing = {t for r in results for t in r.missing_ids}
    if missing:
        lines += [f"Note: {len(missing)} tasks name skills absent from the pool; they count as misses.", ""]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines))
    return path


def system_order(name: str) -> tuple:
    """Sort key: BM25, then the zero-shot and fine-tuned encoders, then hybrids, others last; each first stage
    before its reranked forms."""
    first, plus, _ = name.partition("+")
    families = ("bm25", "bm25-nd", "minilm", "minilm-nd", "finetuned", "finetuned-nd", "hybrid")
    family = next((i for i, f in enumerate(families) if first == f), None)
    if family is None:
        family = len(families) + (0 if first.startswith("hybrid") else 1)
    return (family, first, bool(plus), name)


def read_run(run_dir: str | Path, systems: Sequence[str] | None = None, eval_dir: str = "eval",
             benchmarks: Sequence[str] | None = None) -> list[EvalResult]:
    """The saved results of a run (`RUN_DIR/eval/<benchmark>/<system>/`, or `RUN_DIR/eval/<system>/` as written
    before there were several, however deep a system's name nests its folder): benchmark by benchmark (those of
    `benchmarks` first, in that order), each in the order of `systems` first, then by `system_order`. Results saved
    without the Hit@k curve get it from the run's exported benchmark (`RUN_DIR/benchmark`)."""
    root = Path(run_dir) / eval_dir
    results: dict[tuple[str, str], EvalResult] = {}
    bench = None
    for path in sorted(root.rglob("metrics.json")):
        result = read_result(path.parent)
        if not result.hit_at_k and (Path(run_dir) / "benchmark").exists():
            bench = bench or load_eval_core(Path(run_dir) / "benchmark")
            result = read_result(path.parent, bench)
            result.pool_size = result.pool_size or len(bench.skills)
        results[result.benchmark, result.system] = result
    if not results:
        raise ValueError(f"no evaluation results under {root}: run the pipeline or `skillrouter eval` first")
    found = sorted({b for b, _ in results})
    out = []
    for bench in [b for b in dict.fromkeys(benchmarks or []) if b in found] + [b for b in found
                                                                                if b not in (benchmarks or [])]:
        mine = {s for b, s in results if b == bench}
        listed = [s for s in systems or [] if s in mine]
        out += [results[bench, s] for s in listed + sorted(mine - set(listed), key=system_order)]
    return out


def write_run_report(run_dir: str | Path, systems: Sequence[str] | None = None, out_dir: str | Path | None = None,
                     title: str | None = None, retrieve_k: int | None = 20,
                     benchmarks: Sequence[str] | None = None) -> Path:
    """(Re)build a run's report from what it saved: `RUN_DIR/eval/*` and, when they have run, the ablations
    (`RUN_DIR/ablations/ablations.json`). Writes `RUN_DIR/report/report.md` (or into `out_dir`): with results on
    several benchmarks, one section each (`benchmarks` first, in that order), each with its own plots in a folder
    named after it, and the ablations once at the end."""

    root = Path(run_dir)
    notes = [f"Run `{root}`; rebuild this page with `skillrouter report --run {root}`.", *report_notes(root)]
    for kind in ("encoder", "reranker"):
        m = export_info(str(root / "models" / kind))
        if m:
            notes.append(f"Trained {kind}: from `{m.get('base_model')}`, {m.get('steps')} steps on {m.get('groups')} "
                         f"groups ({m.get('device', '?')}, {m.get('train_seconds', '?')} s), last loss "
                         f"{m.get('final', {}).get('loss', float('nan')):.3f}.")
    results = read_run(root, systems, benchmarks=benchmarks)
    out = Path(out_dir or root / "report")
    names = list(dict.fromkeys(r.benchmark for r in results))
    if len(names) == 1:
        return write_report(results, out, read_ablations(root), title or "skillrouter evaluation", notes, retrieve_k)
    lines = [f"# {title or 'skillrouter evaluation'}", "", f"Benchmarks, in this order: {', '.join(names)}.", ""]
    for i, name in enumerate(names):
        part = write_report([r for r in results if r.benchmark == name], out / name,
                            read_ablations(root) if i == len(names) - 1 else [], f"Benchmark `{name}`",
                            notes if i == 0 else [], retrieve_k)
        text = re.sub(r"\]\(([^)/]+\.png)\)", rf"]({name}/\1)", part.read_text())  # its plots are in its folder
        lines += ["#" + line if line.startswith("#") else line for line in text.splitlines()] + [""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
