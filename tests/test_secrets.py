"""A password never appears in logs, outputs, display data or error messages.

The test server trusts local connections, so any password is accepted: the job
really runs with the secret in its DSN, `PGPASSWORD` or a pgpass file.
"""

import logging
import os

import apache_beam as beam
import pytest

from pipeline.__main__ import main
from pipeline.job import build_pipeline, prepare_job
from pipeline.options import parse_args

SECRET = "S3cr3t-pw-7731"


@pytest.fixture(scope="module")
def secret_table(make_table):
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x float8, c text, y int NOT NULL)",
        "INSERT INTO {table} SELECT g, g * 0.5, 'c' || (g % 5), g % 2 "
        "FROM generate_series(1, 500) g",
    )


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{SECRET}@{host}"


def _all_text(directory) -> str:
    chunks = []
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                chunks.append(f.read().decode("latin-1"))
    return "\n".join(chunks)


def test_password_in_url_never_logged_or_written(database_url, secret_table, tmp_path, caplog, capsys):
    if "@" not in database_url or ":" in database_url.split("://", 1)[1].split("@", 1)[0]:
        pytest.skip("needs a password-less URL to add a password to")
    url = _with_password(database_url)
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    assert main(["--db_url", url, "--table", secret_table, "--label", "y",
                 "--output_dir", str(out), "--verbose"]) == 0
    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert SECRET not in logs
    assert "***" in (out / "manifest.json").read_text()  # the DSN is shown masked
    assert SECRET not in _all_text(out)

    # Errors: a missing table, reported with the (masked) DSN nowhere leaking it.
    assert main(["--db_url", url, "--table", "missing_s2t", "--label", "y",
                 "--output_dir", str(tmp_path / "o2")]) == 1
    assert SECRET not in capsys.readouterr().err
    assert main(["--db_url", _with_password("postgresql://u@127.0.0.1:1/db"), "--table", "t",
                 "--label", "y", "--output_dir", str(tmp_path / "o3")]) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and "***" in err


def test_display_data_of_the_graph_has_no_password(database_url, secret_table, tmp_path):
    if "@" not in database_url:
        pytest.skip("needs a URL")
    url = _with_password(database_url)
    config, beam_args = parse_args(["--db_url", url, "--table", secret_table, "--label", "y",
                                    "--output_dir", str(tmp_path / "o")])
    job = prepare_job(config)
    assert SECRET not in repr(job) and SECRET not in repr(job.source)
    p = beam.Pipeline(argv=beam_args)
    build_pipeline(p, job, snapshot_id=None)
    proto = p.to_runner_api()
    for transform in proto.components.transforms.values():
        for item in transform.display_data:
            assert SECRET.encode() not in item.SerializeToString(), transform.unique_name


@pytest.mark.parametrize("how", ["PGPASSWORD", "pgpass"])
def test_password_from_environment_or_pgpass_never_shown(
    database_url, secret_table, tmp_path, monkeypatch, capsys, how
):
    if how == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", SECRET)
    else:
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"*:*:*:*:{SECRET}\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert main(["--db_url", database_url, "--table", "missing_s2t", "--label", "y",
                 "--output_dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "missing_s2t" in err and SECRET not in err
