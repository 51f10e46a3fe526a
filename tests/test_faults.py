"""Faults and extreme values: wrong password, a restart mid-run, few connections, huge values.

Servers of their own (trust replaced by passwords, low max_connections, restarts)
come from localdev.EmbeddedPostgres; the values test uses the shared server.
"""

import json
import os
import subprocess
import sys

import pytest
import tensorflow_transform as tft

import trainer
from localdev.embedded_postgres import EmbeddedPostgres
from pipeline.__main__ import main
from tests.conftest import execute as _exec
from tests.conftest import wait_for_staging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table(url: str, rows: int) -> None:
    _exec(
        url,
        "CREATE TABLE t (id int PRIMARY KEY, x float8, c text, y int NOT NULL)",
        f"INSERT INTO t SELECT g, g % 1000, 'c' || (g % 50), g % 2 "
        f"FROM generate_series(1, {rows}) g",
        "ANALYZE t",
    )


def test_wrong_password_says_authentication_failed_without_echo(tmp_path, capsys):
    with EmbeddedPostgres() as server:
        _exec(server.url, "ALTER ROLE postgres PASSWORD 'right-pw-1'")
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        _exec(server.url.replace("postgres@", "postgres:right-pw-1@"), "SELECT pg_reload_conf()")
        wrong = server.url.replace("postgres@", "postgres:wrong-pw-2@")
        code = main(["--db_url", wrong, "--table", "t", "--label", "y",
                     "--output_dir", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert "password authentication failed" in err
    assert "wrong-pw-2" not in err and "right-pw-1" not in err


def test_database_restarted_mid_run_fails_cleanly_and_rerun_succeeds(tmp_path):
    with EmbeddedPostgres() as server:
        _table(server.url, 100_000)
        out = tmp_path / "out"
        argv = [sys.executable, "-m", "pipeline", "--db_url", server.url, "--table", "t",
                "--label", "y", "--output_dir", str(out), "--num_partitions", "4"]
        env = {**os.environ, "PYTHONPATH": ROOT}
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        # The staging dir's metadata/ is written once the plan is made and the
        # snapshot exported, seconds before the first partition is read.
        wait_for_staging(out, proc)
        server.restart()
        _, stderr = proc.communicate(timeout=300)
        errors = [line for line in stderr.splitlines() if line.startswith("sql2tfrecord:")]
        assert proc.returncode == 1, stderr[-2000:]
        assert len(errors) == 1 and "partition" in errors[0]
        assert not out.exists()  # nothing published, no staging dir left
        assert os.listdir(tmp_path) == []
        rerun = subprocess.run(argv, cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["rows_read"] == 100_000


@pytest.mark.parametrize("max_connections, succeeds", [(8, True), (2, False)])
def test_few_server_connections_bounded_use_or_clear_error(tmp_path, max_connections, succeeds):
    settings = {"max_connections": str(max_connections), "superuser_reserved_connections": "0"}
    if max_connections < 3:
        settings["reserved_connections"] = "0"
    with EmbeddedPostgres(settings=settings) as server:
        _table(server.url, 20_000)
        argv = [sys.executable, "-m", "pipeline", "--db_url", server.url, "--table", "t",
                "--label", "y", "--output_dir", str(tmp_path / "o"), "--num_partitions", "8",
                "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
        proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                              capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sql2tfrecord:")]
    if succeeds:
        # 8 partitions, yet one connection per worker plus the snapshot holder.
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        assert proc.returncode == 1 and len(errors) == 1
        assert "too many clients" in errors[0] or "remaining connection slots" in errors[0]


def test_extreme_values_are_handled_as_documented(database_url, make_table, tmp_path):
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, distinct_token text NOT NULL, "
        "long_text text, huge float8, nothing float8, y int NOT NULL)",
        "INSERT INTO {table} SELECT g, 'token-' || g, "
        "CASE WHEN g % 250000 = 1 THEN repeat('x', 1000000) || g "
        "WHEN g % 3 = 0 THEN 'short' END, "
        "CASE WHEN g % 10 = 0 THEN 1e300 ELSE g % 97 END, NULL, g % 2 "
        "FROM generate_series(1, 1000000) g",
    )
    out = str(tmp_path / "out")
    assert main(["--db_url", database_url, "--table", table, "--label", "y",
                 "--output_dir", out]) == 0
    manifest = trainer.read_manifest(out)
    assert manifest["rows_read"] == 1_000_000
    # 1,000,000 distinct tokens: the default vocabulary keeps the top 100,000.
    assert manifest["vocabularies"]["distinct_token"]["size"] == 100_000
    # 1 MB values are vocabulary tokens like any other (those in the train split).
    import pyarrow as pa

    from pipeline.split import assign_splits, parse_splits

    long_ids = [1, 250_001, 500_001, 750_001]
    in_train = int((assign_splits(pa.array(long_ids), parse_splits("train=80,eval=20")) == 0).sum())
    tokens = tft.TFTransformOutput(out).vocabulary_by_name("long_text")
    assert sum(1 for t in tokens if len(t) > 1_000_000) == in_train > 0
    # Beyond float32: counted, treated as missing; an all-NULL column gives 0.
    assert manifest["non_finite_values"] == {"huge": 100_000}
    # Statistics: 1M distinct tokens go past the exact cap; 1 MB tokens are cut.
    stats = manifest["statistics"]["summary"]
    token = {s: stats[s]["raw"]["features"]["distinct_token"] for s in stats}
    assert not any(t["exact"] for t in token.values())
    assert sum(t["rows"] for t in token.values()) == 1_000_000
    total = sum(t["unique"] for t in token.values())
    assert abs(total - 1_000_000) < 50_000  # KMV estimates, ~1%
    assert sum(stats[s]["raw"]["features"]["huge"]["non_finite"] for s in stats) == 100_000
    assert all(stats[s]["raw"]["features"]["nothing"]["missing"]
               == stats[s]["raw"]["rows"] for s in stats)
    assert os.path.getsize(os.path.join(out, "report.html")) < 2_000_000
    for features, _ in trainer.make_dataset(out, "eval", 50_000, shuffle=False):
        assert (features["huge_is_missing"].numpy().sum() > 0)
        assert abs(features["huge"].numpy()).max() < 10
        assert (features["nothing"].numpy() == 0).all()
        assert (features["nothing_is_missing"].numpy() == 1).all()
        break
