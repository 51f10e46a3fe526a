"""The opt-in ReadFromJdbc reader: what can be checked without Java's expansion service."""

import pytest

from pipeline.__main__ import main
from pipeline.sources.jdbc import jdbc_url


@pytest.mark.parametrize(
    "dsn, expected",
    [
        ("postgresql://alice:pw@db.example:6543/prod",
         ("jdbc:postgresql://db.example:6543/prod", "alice", "pw")),
        ("host=10.0.0.5 dbname=shop user=bob sslmode=require",
         ("jdbc:postgresql://10.0.0.5:5432/shop?sslmode=require", "bob", None)),
    ],
)
def test_jdbc_url_from_libpq(dsn, expected):
    assert jdbc_url(dsn) == expected


def test_missing_java_is_a_clear_error(database_url, make_table, tmp_path, monkeypatch, capsys):
    table = make_table("CREATE TABLE {table} (id int PRIMARY KEY, y int)")
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    code = main(["--db_url", database_url, "--table", table, "--label", "y",
                 "--output_dir", str(tmp_path / "o"), "--reader", "jdbc"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "--reader jdbc needs Java" in err and err.count("\n") == 0
    assert not (tmp_path / "o").exists()
