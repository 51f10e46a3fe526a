"""`report.html`: the statistics, drift and run facts of an output, as one page.

Self-contained: inline CSS and SVG, no script, no external resource, so it opens
offline and from any file share. Rendered from the output's own files
(`manifest.json`, `statistics/statistics.json`) by `publish_statistics` at the end
of a run, and again by `python -m pipeline.report OUTPUT` for an existing output.
Every value in the page is HTML-escaped (column names and tokens are data).

`publish_statistics` also runs the drift checks (`pipeline.drift`), records them
in the manifest under `statistics`, and with `--fail_on_anomalies` refuses to
publish when a check fails.
"""

from __future__ import annotations

import html
import logging
import math
import posixpath
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["REPORT", "publish_statistics", "render", "write_report", "main"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.1

REPORT = "report.html"
_EMPTY_SVG = '<svg width="300" height="40"><text x="4" y="24">{}</text></svg>'
_COLORS = ("#3b6fb6", "#e07b39", "#4f9d5d", "#a05195", "#7a7a7a")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;
color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 6px}
.muted{color:#667}.card{background:#fff;border:1px solid #dde2ea;border-radius:8px;
padding:14px 18px;margin:14px 0}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;text-align:right;
border-bottom:1px solid #eef0f4}th{background:#f2f4f8;font-weight:600}
td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:18px}.chart{flex:0 0 auto}
.over{background:#fde2e1;color:#a1150f;font-weight:700}
.ok{color:#1f6f3a}.anomalies{border-color:#e0a19d;background:#fff6f5}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;background:#eef1f6;
font-size:12px;margin-left:6px}.legend span{margin-right:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
        return f"{value:.{digits}g}"
    return f"{value:,.{digits}f}".rstrip("0").rstrip(".")


def _cell(value: Any, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    raw = "" if value is None else f' data-value="{_e(value)}"'
    return f"<td{klass}{raw}>{_e(_num(value))}</td>"


def _split_order(names: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != "train", list(names).index(n)))


def _histogram_svg(
    edges: Sequence[float], counts: Sequence[int], color: str, ymax: float
) -> str:
    width, height, pad = 300, 110, 18
    total = sum(counts)
    if not counts or not total:
        return _EMPTY_SVG.format("no finite values")
    bar = width / len(counts)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height + pad}" role="img">'
    ]
    for i, count in enumerate(counts):
        share = count / total
        h = 0 if ymax <= 0 else share / ymax * (height - 4)
        parts.append(
            f'<rect x="{i * bar + 0.5:.1f}" y="{height - h:.1f}" '
            f'width="{max(bar - 1, 0.5):.1f}" height="{h:.1f}" fill="{color}">'
            f"<title>[{_e(_num(edges[i]))}, {_e(_num(edges[i + 1]))}): "
            f"{count:,} ({share:.1%})</title></rect>"
        )
    parts.append(
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#889"/>'
        f'<text x="0" y="{height + 14}" font-size="11">{_e(_num(edges[0]))}</text>'
        f'<text x="{width}" y="{height + 14}" font-size="11" text-anchor="end">'
        f"{_e(_num(edges[-1]))}</text></svg>"
    )
    return "".join(parts)


def _tokens_svg(top: Sequence[Sequence], total: int, color: str) -> str:
    rows = list(top)[:12]
    if not rows or not total:
        return _EMPTY_SVG.format("no values")
    width, row_h, label_w = 340, 16, 110
    biggest = max(c for _, c in rows) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{row_h * len(rows) + 4}" role="img">'
    ]
    for i, (token, count) in enumerate(rows):
        full = repr(token)[1:-1] if token else "(empty)"
        shown = full if len(full) <= 16 else full[:15] + "…"
        w = count / biggest * (width - label_w - 84)
        y = i * row_h
        parts.append(
            f'<text x="{label_w - 4}" y="{y + 12}" font-size="11" text-anchor="end">'
            f"{_e(shown)}</text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 4}" '
            f'fill="{color}"><title>{_e(full)}: {count:,}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" font-size="11">'
            f"{count:,} ({count / total:.1%})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _drift_line(name: str, drift: Mapping[str, Mapping]) -> str:
    out = []
    for pair, features in (drift or {}).items():
        d = features.get(name)
        if d is None:
            continue
        metric = "JS divergence" if d["metric"] == "js_divergence" else "L∞ distance"
        css = "over" if d["over"] else "ok"
        extra = ""
        if d.get("token") is not None:
            extra = f" (largest at {_e(repr(d['token']))})"
        if d.get("exact") is False:
            extra += " approximate"
        out.append(
            f"<div>{_e(pair.replace('_', ' '))}: {metric} "
            f'<span class="{css}" data-drift="{_e(pair)}:{_e(name)}">'
            f"{_e(_num(d['value']))}</span> (threshold {_e(d['threshold'])})"
            f"{extra}</div>"
        )
    return "".join(out)


def _feature_section(
    name: str,
    splits: Sequence[str],
    statistics: Mapping[str, Any],
    column_type: str | None,
    drift: Mapping[str, Mapping],
    column: str | None = None,
) -> str:
    """One raw column's card, headed by the name users know.

    `column` is the column's name in the database when it differs from its
    feature name `name` (`transforms.names`).
    """
    features = [statistics[s]["raw"]["features"].get(name) for s in splits]
    present = [(s, f) for s, f in zip(splits, features, strict=True) if f]
    if not present:
        return ""
    kind = present[0][1]["kind"]
    head = (
        f'<section class="card" id="feature-{_e(name)}"><h2>{_e(column or name)}'
        f'<span class="badge">{_e(column_type or kind)}</span>'
        + (f' <span class="muted">feature {_e(name)}</span>' if column else "")
        + "</h2>"
    )
    if kind == "bytes":
        cols = ["rows", "missing", "missing %", "unique", "avg length (bytes)"]
    else:
        cols = [
            "rows",
            "missing",
            "missing %",
            "mean",
            "std",
            "min",
            "median",
            "max",
            "zeros",
            "non-finite",
        ]
    rows = [f"<tr><th>split</th>{''.join(f'<th>{c}</th>' for c in cols)}</tr>"]
    for split, f in present:
        rate = f["missing"] / f["rows"] * 100 if f["rows"] else None
        cells = [_cell(f["rows"]), _cell(f["missing"]), _cell(rate)]
        if kind == "bytes":
            unique = f["unique"] if f["exact"] else f"≈{f['unique']:,}"
            cells += [f"<td>{_e(unique)}</td>", _cell(f["avg_length"])]
        else:
            median = f["quantiles"][5] if f.get("quantiles") else None
            cells += [_cell(f[k]) for k in ("mean", "std", "min")]
            cells += [_cell(median), _cell(f["max"]), _cell(f["zeros"])]
            cells += [_cell(f["non_finite"], "over" if f["non_finite"] else "")]
        rows.append(
            f'<tr data-split="{_e(split)}"><td>{_e(split)}</td>{"".join(cells)}</tr>'
        )
    charts = []
    if kind == "bytes":
        for i, (split, f) in enumerate(present):
            charts.append(
                f'<div class="chart"><div class="muted">{_e(split)}: top tokens</div>'
                + _tokens_svg(f["top"], f["num_values"]["total"], _COLORS[i % 5])
                + "</div>"
            )
    else:
        from pipeline.histogram import Histogram, common_bins

        hists = [Histogram.from_json(f["histogram"]) for _, f in present]
        edges, counts = common_bins(hists)
        shares = [c / c.sum() for c in counts if c.sum()]
        ymax = max((float(s.max()) for s in shares), default=0.0)
        for i, ((split, _), c) in enumerate(zip(present, counts, strict=True)):
            charts.append(
                f'<div class="chart"><div class="muted">{_e(split)}: histogram '
                f"(share of finite values, same bins)</div>"
                + _histogram_svg(edges, c.tolist(), _COLORS[i % 5], ymax)
                + "</div>"
            )
    return (
        head
        + f"<table>{''.join(rows)}</table>"
        + _drift_line(name, drift)
        + f'<div class="charts">{"".join(charts)}</div></section>'
    )


def _transformed_table(splits: Sequence[str], statistics: Mapping[str, Any]) -> str:
    names = sorted(
        {
            n
            for s in splits
            for n in statistics[s].get("transformed", {}).get("features", {})
        }
    )
    if not names:
        return ""
    head = "<tr><th>feature</th><th>split</th><th>missing</th><th>mean / unique</th>"
    head += "<th>std</th><th>min</th><th>max</th></tr>"
    rows = [head]
    for name in names:
        for split in splits:
            f = statistics[split]["transformed"]["features"].get(name)
            if f is None:
                continue
            if f["kind"] == "bytes":
                cells = _cell(f["unique"]) + "<td></td><td></td><td></td>"
            else:
                cells = "".join(_cell(f[k]) for k in ("mean", "std", "min", "max"))
            rows.append(
                f"<tr><td>{_e(name)}</td><td>{_e(split)}</td>{_cell(f['missing'])}"
                f"{cells}</tr>"
            )
    return (
        '<section class="card"><h2>Transformed features</h2>'
        f"<table>{''.join(rows)}</table></section>"
    )


def render(manifest: Mapping[str, Any], statistics: Mapping[str, Any]) -> str:
    """The report page of one output (a complete HTML document)."""
    splits = _split_order(list(statistics))
    source = manifest.get("source", {})
    types = {c["name"]: c["type"] for c in source.get("columns", [])}
    stats_meta = manifest.get("statistics") or {}
    drift = stats_meta.get("drift") or {}
    pairs = dict(drift.get("splits") or {})
    for split, features in (drift.get("baseline") or {}).items():
        pairs[f"{split}_vs_baseline"] = features
    anomalies = stats_meta.get("anomalies") or []
    what = source.get("table") or source.get("query") or "?"
    split_rows = "".join(
        f'<tr data-split="{_e(n)}"><td>{_e(n)}</td>'
        f"{_cell(manifest.get('splits', {}).get(n, {}).get('rows'))}"
        f"{_cell(len(manifest.get('splits', {}).get(n, {}).get('files', [])))}</tr>"
        for n in splits
    )
    if anomalies:
        items = "".join(f"<li>{_e(a)}</li>" for a in anomalies)
        alert = (
            f'<section class="card anomalies"><h2>{len(anomalies)} anomalies</h2>'
            f"<ul>{items}</ul></section>"
        )
    else:
        alert = '<section class="card"><h2 class="ok">No anomalies</h2></section>'
    schema = drift.get("schema") or []
    schema_html = ""
    if drift.get("baseline") is not None:
        changes = (
            "".join(
                f"<li>{_e(c['column'])}: {_e(c['change'])} "
                f"{_e(c.get('before', '(none)'))} → {_e(c.get('after', '(none)'))}</li>"
                for c in schema
            )
            or "<li>no column added, dropped or changed</li>"
        )
        schema_html = (
            f'<section class="card"><h2>Schema against the baseline</h2>'
            f"<ul>{changes}</ul></section>"
        )
    legend = "".join(
        f'<span><svg width="10" height="10"><rect width="10" height="10" '
        f'fill="{_COLORS[i % 5]}"/></svg> {_e(s)}</span>'
        for i, s in enumerate(splits)
    )
    features = sorted({n for s in splits for n in statistics[s]["raw"]["features"]})
    # Feature name -> the column's name in the database, where they differ.
    original = {
        key: column
        for column, key in (manifest.get("names") or {}).items()
        if key != column
    }
    sections = "".join(
        _feature_section(
            n,
            splits,
            statistics,
            types.get(original.get(n, n)),
            pairs,
            original.get(n),
        )
        for n in features
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>sql2tfrecord report: {_e(what)}</title><style>{_CSS}</style></head>"
        f'<body><h1>sql2tfrecord report</h1><div class="muted">{_e(what)} · '
        f"{_e(manifest.get('created_at', ''))} · label {_e(manifest.get('label'))}"
        f"</div>"
        '<section class="card"><h2>Run</h2><table>'
        f"<tr><td>rows read</td>{_cell(manifest.get('rows_read'))}</tr>"
        f"<tr><td>rows dropped (NULL label)</td>"
        f"{_cell(manifest.get('rows_dropped_null_label'))}</tr>"
        f"<tr><td>elapsed seconds</td>{_cell(manifest.get('elapsed_seconds'))}</tr>"
        f"<tr><td>partitions</td>"
        f"{_cell(len(manifest.get('read_plan', {}).get('partitions', [])))}</tr>"
        "</table><table><tr><th>split</th><th>rows</th><th>files</th></tr>"
        f"{split_rows}</table></section>{alert}{schema_html}"
        f'<div class="legend">{legend}</div>{sections}'
        f"{_transformed_table(splits, statistics)}"
        '<p class="muted">Statistics over each split\'s rows; histograms are exact '
        "counts in equal-width bins shared by all splits; quantiles from a summary "
        "(rank error < 0.5%); unique counts exact below 10,000 distinct values. "
        "See README, Statistics and report.</p></body></html>"
    )


def write_report(
    output_dir: str, manifest: Mapping[str, Any], statistics, name: str = REPORT
) -> str:
    """Writes `<output_dir>/<name>` (report.html) atomically; returns its path."""
    import uuid

    from apache_beam.io.filesystems import FileSystems

    from pipeline.sink import output

    final = output.join(output_dir, name)
    temp = output.join(output_dir, f".{name}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(temp) as f:
        f.write(render(manifest, statistics).encode("utf-8"))
    FileSystems.rename([temp], [final])
    return final


def _summary(statistics: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's compact copy: no histograms, top 5 tokens."""
    keep_numbers = (
        "rows",
        "missing",
        "non_finite",
        "mean",
        "std",
        "min",
        "max",
        "zeros",
        "quantiles",
    )
    keep_bytes = ("rows", "missing", "unique", "exact", "avg_length")
    out: dict[str, Any] = {}
    for split, groups in statistics.items():
        out[split] = {}
        for group, stats in groups.items():
            features = {}
            for name, f in stats["features"].items():
                keys = keep_bytes if f["kind"] == "bytes" else keep_numbers
                features[name] = {"kind": f["kind"], **{k: f[k] for k in keys}}
                if f["kind"] == "bytes":
                    features[name]["top"] = f["top"][:5]
            out[split][group] = {"rows": stats["rows"], "features": features}
    return out


def _drift_numbers(result: Mapping[str, Any]) -> dict[str, Any]:
    def strip(features):
        return {
            n: {k: v for k, v in d.items() if k not in ("edges", "counts")}
            for n, d in features.items()
        }

    out = dict(result)
    out["splits"] = {k: strip(v) for k, v in result["splits"].items()}
    if result["baseline"] is not None:
        out["baseline"] = {k: strip(v) for k, v in result["baseline"].items()}
    return out


def _thresholds(config, manifest: Mapping[str, Any]):
    """Drift thresholds: the flag, else the --features config's `drift:`, else 0.1."""
    from pipeline.drift import Thresholds

    configured = (manifest.get("features") or {}).get("drift") or {}
    pick = [
        value if value is not None else configured.get(key, DEFAULT_THRESHOLD)
        for key, value in (
            ("max_js_divergence", config.max_js_divergence),
            ("max_linf_distance", config.max_linf_distance),
        )
    ]
    return Thresholds(*pick)


def _previous_output(path: str) -> tuple[tuple | None, str | None]:
    """(statistics, manifest) of a complete output with statistics at `path`."""
    from pipeline.compute_statistics import read_statistics
    from pipeline.sink import output

    try:
        previous = read_statistics(path)
        if previous is None:
            return None, None
        return (previous, output.read_manifest(path)), path
    except (OSError, ValueError):  # no complete output there: no baseline
        return None, None


def publish_statistics(config, manifest: dict[str, Any], built: str) -> None:
    """Drift checks, `manifest["statistics"]`, report.html; may refuse to publish.

    The baseline is `--baseline_stats`, else the complete output this run replaces
    at the same `--output_dir` (if it has statistics), else none.
    `built` is the directory the run builds the output in (its staging dir). A run
    refused by `--fail_on_anomalies` is not published, so its report is written
    beside the target instead, as `<output_dir>.rejected-report.html`.

    Raises:
        AnomaliesError: with `--fail_on_anomalies`, when a check failed.
    """
    from pipeline.compute_statistics import read_statistics
    from pipeline.drift import AnomaliesError, check
    from pipeline.sink import output

    statistics = read_statistics(built)
    if statistics is None:
        raise RuntimeError(
            f"{config.output_dir}: the statistics were not written; nothing published"
        )
    baseline, baseline_from = None, None
    if config.baseline_stats:
        base_stats = read_statistics(config.baseline_stats)
        if base_stats is None:
            raise output.OutputError(
                f"--baseline_stats {config.baseline_stats} has no "
                "statistics/statistics.json (not an output written with statistics)"
            )
        baseline = (base_stats, output.read_manifest(config.baseline_stats))
        baseline_from = config.baseline_stats
    else:
        # The output this run replaces (--overwrite): still in place until the swap.
        baseline, baseline_from = _previous_output(config.output_dir)
    names = _split_order(list(manifest["splits"]))
    ordered = {n: statistics[n] for n in names}
    result = check(
        ordered,
        manifest["source"]["columns"],
        _thresholds(config, manifest),
        baseline,
    )
    manifest["statistics"] = {
        "directory": "statistics",
        "files": [f"{n}.pb" for n in names] + ["statistics.json"],
        "baseline": baseline_from,
        "summary": _summary(ordered),
        "drift": _drift_numbers(result),
        "anomalies": result["anomalies"],
    }
    manifest["report"] = REPORT
    path = write_report(built, manifest, ordered)
    for anomaly in result["anomalies"]:
        _LOGGER.warning("Anomaly: %s", anomaly)
    _LOGGER.debug("Report: %s", path)  # staged; the summary names the final path
    if result["anomalies"] and config.fail_on_anomalies:
        parent, base = posixpath.split(config.output_dir.rstrip("/"))
        path = write_report(
            parent or ".", manifest, ordered, f"{base}.rejected-report.html"
        )
        first = result["anomalies"][0]
        more = len(result["anomalies"]) - 1
        raise AnomaliesError(
            f"--fail_on_anomalies: {first}"
            + (f" (and {more} more)" if more else "")
            + f"; the output is not published (report: {path})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipeline.report OUTPUT`: re-renders OUTPUT/report.html."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TF loads (via Beam)
    from pipeline.compute_statistics import read_statistics
    from pipeline.sink import output

    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m pipeline.report OUTPUT_DIR", file=sys.stderr)
        return 2
    out = argv[0].rstrip("/") or "/"
    try:
        manifest = output.read_manifest(out)
    except FileNotFoundError as err:
        print(f"pipeline.report: error: {err}", file=sys.stderr)
        return 1
    statistics = read_statistics(out)
    if statistics is None:
        print(
            f"pipeline.report: error: {out} has no statistics/statistics.json "
            "(written with --no_statistics, or by an older version)",
            file=sys.stderr,
        )
        return 1
    names = _split_order(list(manifest.get("splits") or statistics))
    path = write_report(
        out, manifest, {n: statistics[n] for n in names if n in statistics}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
