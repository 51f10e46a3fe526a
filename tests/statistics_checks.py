"""Statistics, drift, report and --fail_on_anomalies on the end-to-end run's output.

Imported into tests/test_end_to_end.py (`from tests.statistics_checks import *`) so
these tests share its session fixtures (`output_a`: one pipeline run) instead of
running the pipeline again; this module is not collected on its own. Expected
values come from the rows fetched by SQL (numpy, Counter), never from the code
under test.
"""

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

__all__ = [
    "test_statistics_raw_values_match_sql_rows",
    "test_statistics_protos_and_transformed_features",
    "test_drift_numbers_match_independent_computation",
    "test_report_rerenders_identically_from_the_output",
    "test_report_renders_in_headless_chromium",
    "test_fail_on_anomalies_against_baseline_refuses_to_publish",
    "test_previous_output_at_the_same_root_is_the_baseline",
    "test_report_heads_columns_by_their_database_names",
]


def _stats(out):
    with open(os.path.join(out, "statistics", "statistics.json")) as f:
        return json.load(f)


def _split_rows(expected, split):
    return [expected["labelled"][i] for i in sorted(expected["splits"][split])]


def test_statistics_raw_values_match_sql_rows(output_a, expected):
    stats = _stats(output_a)
    assert sorted(stats) == ["eval", "train"]
    manifest = json.load(open(os.path.join(output_a, "manifest.json")))
    # The same non-finite values the reader counted, split between the splits.
    assert sum(stats[s]["raw"]["features"]["x"]["non_finite"] for s in stats) == (
        manifest["non_finite_values"]["x"])
    for split in ("train", "eval"):
        rows = _split_rows(expected, split)
        raw = stats[split]["raw"]
        assert raw["rows"] == len(rows) > 0
        # x: float32 features; NULL missing, NaN/±Infinity non-finite (not missing).
        x = raw["features"]["x"]
        present = [r.get("x_raw", r["x"]) for r in rows if r.get("x_raw", r["x"]) is not None]
        values = np.array(present, dtype=np.float32).astype(np.float64)
        finite = values[np.isfinite(values)]
        assert x["missing"] == sum(1 for r in rows if r["x"] is None and "x_raw" not in r)
        assert x["non_finite"] == len(values) - len(finite) > 0
        assert x["nan"] == int(np.isnan(values).sum())
        assert x["mean"] == pytest.approx(finite.mean(), rel=1e-9)
        assert x["std"] == pytest.approx(finite.std(), rel=1e-9)
        assert (x["min"], x["max"]) == (finite.min(), finite.max())
        # n: NOT NULL integer, exact.
        n = np.array([r["n"] for r in rows], dtype=np.int64)
        f = raw["features"]["n"]
        assert (f["missing"], f["min"], f["max"]) == (0, n.min(), n.max())
        assert f["zeros"] == int((n == 0).sum())
        assert f["mean"] == pytest.approx(n.mean(), rel=1e-12)
        hist_total = sum(raw["features"]["n"]["histogram"]["counts"])
        assert hist_total == len(n)
        # id: huge bigint keys, exact min/max.
        ids = [r["id"] for r in rows]
        assert (raw["features"]["id"]["min"], raw["features"]["id"]["max"]) == (
            min(ids), max(ids))
        # city: NULL missing; '' and a token with a newline are tokens.
        city = raw["features"]["city"]
        counts = collections.Counter(r["city"] for r in rows if r["city"] is not None)
        assert city["missing"] == sum(1 for r in rows if r["city"] is None)
        assert city["unique"] == len(counts) and city["exact"]
        top = sorted(counts.items(), key=lambda tc: (-tc[1], tc[0].encode()))
        assert city["top"] == [list(tc) for tc in top]
        lengths = [len(t.encode()) for r in rows if (t := r["city"]) is not None]
        assert city["avg_length"] == pytest.approx(np.mean(lengths))
        cat = raw["features"]["cat"]
        assert dict(map(tuple, cat["token_counts"])) == collections.Counter(
            r["cat"] for r in rows)


def test_statistics_protos_and_transformed_features(output_a, expected):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = _stats(output_a)
    manifest = json.load(open(os.path.join(output_a, "manifest.json")))
    assert manifest["report"] == "report.html"
    for split in ("train", "eval"):
        proto = statistics_pb2.DatasetFeatureStatisticsList()
        with open(os.path.join(output_a, "statistics", f"{split}.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        dataset = proto.datasets[0]
        assert dataset.name == split
        assert dataset.num_examples == len(expected["splits"][split])
        features = {"/".join(f.path.step): f for f in dataset.features}
        n = np.array([r["n"] for r in _split_rows(expected, split)], dtype=np.float64)
        assert features["n"].num_stats.mean == pytest.approx(n.mean())
        assert features["city"].string_stats.unique == stats[split]["raw"]["features"]["city"]["unique"]
        assert "transformed/n" in features and "transformed/x_bucket" in features
        summary = manifest["statistics"]["summary"][split]["raw"]["features"]["n"]
        assert summary["mean"] == pytest.approx(n.mean())
    # zscore on train rows: mean 0, population std 1 (an independent property).
    zn = stats["train"]["transformed"]["features"]["n"]
    assert zn["mean"] == pytest.approx(0, abs=1e-5)
    assert zn["std"] == pytest.approx(1, abs=1e-4)


def _js(p, q):
    p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2
    def kl(a):
        nz = a > 0
        return np.sum(a[nz] * np.log(a[nz] / m[nz])) / np.log(2)
    return (kl(p) + kl(q)) / 2


def test_drift_numbers_match_independent_computation(output_a, expected):
    from pipeline.histogram import Histogram, common_bins

    stats = _stats(output_a)
    manifest = json.load(open(os.path.join(output_a, "manifest.json")))
    drift = manifest["statistics"]["drift"]["splits"]["train_vs_eval"]
    train, evals = _split_rows(expected, "train"), _split_rows(expected, "eval")
    # L-infinity over cat's token shares, from Counter.
    ct = collections.Counter(r["cat"] for r in train)
    ce = collections.Counter(r["cat"] for r in evals)
    linf = max(abs(ct[t] / len(train) - ce[t] / len(evals)) for t in ct | ce)
    assert drift["cat"]["value"] == pytest.approx(linf, rel=1e-12)
    assert drift["cat"]["metric"] == "linf_distance" and not drift["cat"]["over"]
    # JS over the shared bins, the counts from np.histogram of the SQL values.
    hists = [Histogram.from_json(stats[s]["raw"]["features"]["n"]["histogram"])
             for s in ("train", "eval")]
    edges, _ = common_bins(hists)
    a = np.histogram([r["n"] for r in train], bins=edges)[0]
    b = np.histogram([r["n"] for r in evals], bins=edges)[0]
    assert drift["n"]["value"] == pytest.approx(_js(a, b), rel=1e-9)
    assert 0 < drift["n"]["value"] < 0.1 and drift["n"]["threshold"] == 0.1
    assert manifest["statistics"]["anomalies"] == []


def test_report_rerenders_identically_from_the_output(output_a, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(output_a, copy)
    os.remove(copy / "report.html")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.report", str(copy)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    original = open(os.path.join(output_a, "report.html"), encoding="utf-8").read()
    assert (copy / "report.html").read_text(encoding="utf-8") == original
    assert "<script" not in original and "http://" not in original.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    missing = subprocess.run(
        [sys.executable, "-m", "pipeline.report", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=120,
    )
    ours = [line for line in missing.stderr.splitlines() if "pipeline.report" in line]
    assert missing.returncode == 1 and len(ours) == 1 and "manifest.json" in ours[0]


def _chromium():
    """The chromium binary; installed with apt-get when missing and possible."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True,
                       timeout=900, check=False)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("headless Chromium is not installed and cannot be (not root or no apt)")
    return found


def _pixel_stddev(png_path):
    try:
        from PIL import Image, ImageStat
    except ImportError:  # PNG decode without PIL: the raw scanlines' spread
        import struct
        import zlib
        data = open(png_path, "rb").read()
        pos, idat = 8, b""
        while pos < len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            if kind == b"IDAT":
                idat += data[pos + 8:pos + 8 + length]
            pos += 12 + length
        return float(np.frombuffer(zlib.decompress(idat), np.uint8).std())
    with Image.open(png_path) as image:
        return max(ImageStat.Stat(image.convert("RGB")).stddev)


def test_report_renders_in_headless_chromium(output_a, expected):
    chromium = _chromium()
    page = "file://" + os.path.abspath(os.path.join(output_a, "report.html"))
    with tempfile.TemporaryDirectory() as profile:
        common = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                  "--window-size=1200,2000"]
        shot = os.path.join(profile, "shot.png")
        subprocess.run([*common, f"--screenshot={shot}", page], capture_output=True,
                       timeout=180, check=True)
        dom = subprocess.run([*common, "--dump-dom", page], capture_output=True,
                             text=True, timeout=180, check=True).stdout
        assert os.path.getsize(shot) > 10_000
        assert _pixel_stddev(shot) > 5  # not a blank page
    train_rows = len(expected["splits"]["train"])
    assert f'<tr data-split="train"><td>train</td><td data-value="{train_rows}">' in dom
    assert 'id="feature-city"' in dom and "<svg" in dom and "No anomalies" in dom
    n_mean = _stats(output_a)["train"]["raw"]["features"]["n"]["mean"]
    assert f'data-value="{n_mean}"' in dom
    assert "New\\nYork" in dom  # a token with a newline is shown escaped


def test_fail_on_anomalies_against_baseline_refuses_to_publish(
    database_url, rich_table, output_a, make_table, tmp_path, capsys
):
    """Against output_a as baseline: a changed type, a dropped and an added column,
    a lost NOT NULL and a shifted distribution are anomalies; no manifest."""
    from pipeline.__main__ import main

    table = make_table(
        f'CREATE TABLE {{table}} AS SELECT id, x * 3 + 40 AS x, n::bigint AS n, '
        f'price, flag, cat, city, ts, y, '
        f"'<script>alert(1)</script>'::text AS note FROM \"{rich_table}\" LIMIT 400",
        'ALTER TABLE {table} ADD PRIMARY KEY (id)',
    )
    out = tmp_path / "drifted"
    argv = ["--db_url", database_url, "--table", table, "--label", "y",
            "--output_dir", str(out), "--baseline_stats", output_a,
            "--fail_on_anomalies", "--max_js_divergence", "0.2"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--fail_on_anomalies" in err and "not published" in err
    assert not os.path.exists(out / "manifest.json")
    # Nothing is published; the refused run's report is kept beside the target.
    report = (tmp_path / "drifted.rejected-report.html").read_text(encoding="utf-8")
    for text in ("column born: dropped", "column note: added",
                 "column n: type since the baseline (before integer, after bigint)",
                 "column cat: nullability since the baseline (before NOT NULL, after "
                 "nullable)", "x: js_divergence train vs baseline"):
        assert text in report, text
    assert "<script>alert" not in report and "&lt;script&gt;alert(1)" in report
    assert 'class="over"' in report


def test_previous_output_at_the_same_root_is_the_baseline(
    database_url, rich_table, output_a, features_file, tmp_path
):
    """--overwrite of an output with statistics compares against it: same rows, 0."""
    from pipeline.__main__ import main

    out = tmp_path / "again"
    shutil.copytree(output_a, out)
    argv = ["--db_url", database_url, "--table", rich_table, "--label", "y",
            "--output_dir", str(out), "--features", features_file,
            "--num_partitions", "3", "--overwrite"]
    assert main(argv) == 0
    with open(out / "manifest.json") as f:
        manifest = json.load(f)
    statistics = manifest["statistics"]
    assert statistics["baseline"] == str(out)
    drift = statistics["drift"]["baseline"]
    assert set(drift) == {"train", "eval"}
    checked = 0
    for features in drift.values():
        for name, numbers in features.items():
            if numbers["value"] is not None:  # the same rows: no drift at all
                assert numbers["value"] == 0, (name, numbers)
                checked += 1
    assert checked >= 10
    assert statistics["anomalies"] == []


def test_report_heads_columns_by_their_database_names(output_default):
    """Feature names are for TensorFlow; the report shows the names users know."""
    import html

    with open(os.path.join(output_default, "manifest.json")) as f:
        names = json.load(f)["names"]
    with open(os.path.join(output_default, "report.html"), encoding="utf-8") as f:
        page = f.read()
    renamed = {c: k for c, k in names.items() if c != k and f'id="feature-{k}"' in page}
    assert len(renamed) >= 5  # a/b, ünïcødé_列, "with space", q"uote, d.o.t, …
    for column, key in renamed.items():
        assert f"<h2>{html.escape(column)}<span" in page, column
        assert f"feature {key}</span>" in page
