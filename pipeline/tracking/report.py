"""A static HTML comparison of MLflow runs: metric curves as embedded PNGs and a param diff table.

Works with any tracking URI (the embedded ``sqlite:///…/mlruns.db`` of a run folder, an offline fallback
store, or an ``http://`` server). The HTML is one self-contained file (images are base64 ``data:`` URIs).
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path

import mlflow
from mlflow.entities import Run

from medsr.pipeline.io import write_text_atomic
from medsr.pipeline.tracking.session import resolve_tracking_uri

#: metrics drawn first when present (the ones a person compares); the rest follow alphabetically
KEY_METRICS = ("val_psnr", "val_ssim", "val_region_ssim", "loss", "psnr", "ssim")


def find_runs(client: mlflow.MlflowClient, refs: Sequence[str], experiment: str | None = None) -> list[Run]:
    """Return the runs named by ``refs``: run ids, or run names (the newest run of that name).

    Args:
        client: a client on the tracking URI.
        refs: run ids or run names.
        experiment: restrict names to this experiment (all experiments otherwise).

    Raises:
        ValueError: when a ref matches no run or the experiment does not exist.
    """
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ValueError(f"experiment '{experiment}': not found at {client.tracking_uri}")
        experiment_ids = [exp.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs = []
    for ref in refs:
        run = None
        try:
            run = client.get_run(ref)
        except mlflow.exceptions.MlflowException:
            pass
        if run is None and experiment_ids:
            name = ref.replace("'", "\\'")
            found = client.search_runs(
                experiment_ids, filter_string=f"attributes.run_name = '{name}'", order_by=["attributes.start_time DESC"]
            )
            run = found[0] if found else None
        if run is None:
            raise ValueError(f"run '{ref}': no run with this id or name at {client.tracking_uri}")
        runs.append(run)
    return runs


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _ordered_metrics(keys: set[str], wanted: Sequence[str] | None) -> list[str]:
    if wanted:
        return [k for k in wanted if k in keys]
    first = [k for k in KEY_METRICS if k in keys]
    return first + sorted(keys - set(first))


def _label(run: Run) -> str:
    return f"{run.info.run_name} ({run.info.run_id[:8]})"


def render_report(
    tracking_uri: str | None,
    runs: Sequence[str],
    output: str | os.PathLike,
    experiment: str | None = None,
    metrics: Sequence[str] | None = None,
    title: str = "medsr run comparison",
) -> Path:
    """Write a self-contained HTML page comparing ``runs``; returns its path.

    The page holds: a summary table (experiment, status, start, last value of each compared metric); one
    comparison plot per metric with every run's curve; one panel per run with all its curves; the params
    that differ between the runs (and the full param table, folded).

    Args:
        tracking_uri: where the runs are (``$MLFLOW_TRACKING_URI`` wins when set, as for training).
        runs: run ids or names (at least one).
        output: the HTML file to write (atomically).
        experiment: look names up in this experiment only.
        metrics: metric names to draw (all when ``None``).
        title: the page title.

    Raises:
        ValueError: when no run is given or one cannot be found.
    """
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("runs: give at least one run id or name")
    uri = (
        resolve_tracking_uri(tracking_uri, os.getcwd())
        if tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        else None
    )
    if uri is None:
        raise ValueError(
            "tracking_uri: give --tracking-uri (e.g. sqlite:///runs/srcnn/mlruns.db) or set MLFLOW_TRACKING_URI"
        )
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = find_runs(client, runs, experiment)
    histories: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run in found:
        histories[run.info.run_id] = {
            key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics
        }
    all_keys = set().union(*(h.keys() for h in histories.values()))
    keys = _ordered_metrics(all_keys, metrics)

    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}"
        ".diff{background:#fff3cd}img{max-width:100%}.grid{display:flex;flex-wrap:wrap;gap:1em}</style>",
        f"</head><body><h1>{esc(title)}</h1>",
        f"<p>Tracking URI: <code>{esc(uri)}</code>; generated {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>",
        "<h2>Runs</h2><table><tr><th>run</th><th>experiment</th><th>status</th><th>started</th>",
    ]
    parts += [f"<th>{esc(k)} (last)</th>" for k in keys[:8]] + ["</tr>"]
    for run in found:
        exp = client.get_experiment(run.info.experiment_id)
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
        cells = [_label(run), exp.name if exp else run.info.experiment_id, run.info.status, started]
        for key in keys[:8]:
            history = histories[run.info.run_id].get(key)
            cells.append(f"{history[-1][1]:.5g}" if history else "")
        parts.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    parts.append("</table>")

    parts.append("<h2>Metric curves</h2><div class='grid'>")
    for key in keys:
        fig = Figure(figsize=(5, 3.2), dpi=80)
        ax = fig.add_subplot(1, 1, 1)
        for run in found:
            history = histories[run.info.run_id].get(key)
            if history:
                steps, values = zip(*history)
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=_label(run))
        ax.set_title(key)
        ax.set_xlabel("step (iteration or epoch)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        parts.append(
            f"<figure class='metric' data-metric='{esc(key)}'><img alt='{esc(key)}' src='data:image/png;base64,{_png(fig)}'></figure>"
        )
    parts.append("</div>")

    parts.append("<h2>Each run</h2>")
    for run in found:
        run_keys = [k for k in keys if histories[run.info.run_id].get(k)]
        if not run_keys:
            parts.append(f"<h3>{esc(_label(run))}</h3><p>no metrics</p>")
            continue
        cols = min(4, len(run_keys))
        rows = (len(run_keys) + cols - 1) // cols
        fig = Figure(figsize=(3.4 * cols, 2.6 * rows), dpi=70)
        for i, key in enumerate(run_keys):
            ax = fig.add_subplot(rows, cols, i + 1)
            steps, values = zip(*histories[run.info.run_id][key])
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
            ax.set_title(key, fontsize=9)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        parts.append(
            f"<h3>{esc(_label(run))}</h3><img class='run-plot' data-run-id='{esc(run.info.run_id)}' "
            f"alt='{esc(_label(run))} metrics' src='data:image/png;base64,{_png(fig)}'>"
        )

    all_params = sorted(set().union(*(r.data.params.keys() for r in found)))
    differing = [k for k in all_params if len({r.data.params.get(k) for r in found}) > 1]
    header = "<tr><th>param</th>" + "".join(f"<th>{esc(_label(r))}</th>" for r in found) + "</tr>"

    def table(names: Sequence[str], css: str) -> str:
        rows = [
            "<tr><td>"
            + esc(k)
            + "</td>"
            + "".join(f"<td class='{css}'>{esc(str(r.data.params.get(k, '—')))[:300]}</td>" for r in found)
            + "</tr>"
            for k in names
        ]
        return "<table>" + header + "".join(rows) + "</table>"

    parts.append(f"<h2>Params that differ ({len(differing)} of {len(all_params)})</h2>")
    parts.append(table(differing, "diff") if differing else "<p>The runs have the same params.</p>")
    parts.append(f"<details><summary>All params ({len(all_params)})</summary>{table(all_params, '')}</details>")
    parts.append("</body></html>")

    return write_text_atomic(output, "\n".join(parts))
