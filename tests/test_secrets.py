"""A password never appears in logs, outputs, display data or error messages.

The test server trusts local connections, so any password is accepted: the job
really runs with the secret in its DSN, `PGPASSWORD` or a pgpass file.
"""

import logging
import os

import apache_beam as beam
import pytest

from pipeline.__main__ import main
from pipeline.build import build_pipeline
from pipeline.job import prepare_job
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
    job.close()  # the graph is only built, never run: release the locks now
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


# --- Masking with libpq's parser; malformed strings; a password-free process list.

import subprocess  # noqa: E402
import sys  # noqa: E402
import urllib.parse  # noqa: E402

import psycopg2.extensions  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipeline.options import UsageError  # noqa: E402
from pipeline.sources.postgres.connection import (  # noqa: E402
    DatabaseError,
    Dsn,
    DsnSyntaxError,
    check_dsn,
    connect,
    mask_dsn,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# libpq strings cannot hold NUL; everything else, printable or not, may be a password.
PASSWORDS = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30
) | st.text(" '\"\\@:/?#%&=", min_size=1, max_size=12)


def _url(password: str, host: str = "db.example", port: int = 5432) -> str:
    return (
        f"postgresql://alice:{urllib.parse.quote(password, safe='')}@{host}:{port}/prod"
        "?sslmode=disable"
    )


def _kv(password: str, host: str = "db.example", port: int = 5432) -> str:
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    return f"host={host} port={port} user=alice password='{quoted}' dbname=prod"


def _fragments(secret: str, size: int = 4) -> set[str]:
    return {secret[i : i + size] for i in range(max(1, len(secret) - size + 1))}


def _assert_nothing_of(secret: str, text: str, baseline: str) -> None:
    """`text` holds no 4+ char piece of `secret` that the password-free `baseline`
    does not hold too (like "alice" or "db.example" when the password is "alice")."""
    assert secret not in text or secret in baseline
    for piece in _fragments(secret):
        assert piece not in text or piece in baseline, piece


@settings(max_examples=150)
@given(password=PASSWORDS, form=st.sampled_from([_url, _kv]))
def test_masked_dsn_never_holds_a_generated_password(password, form):
    dsn = form(password)
    assert psycopg2.extensions.parse_dsn(dsn)["password"] == password  # well-formed
    masked, baseline = mask_dsn(dsn), mask_dsn(form("x"))
    assert masked == baseline  # a function of everything but the password
    assert "***" in masked and "db.example" in masked
    _assert_nothing_of(password, masked, baseline)
    assert repr(Dsn(dsn)) == repr(Dsn(form("x")))


@settings(max_examples=25)
@given(password=PASSWORDS, form=st.sampled_from([_url, _kv]))
def test_connect_errors_never_hold_a_generated_password(password, form):
    def error(dsn):
        with pytest.raises(DatabaseError) as info:
            connect(Dsn(dsn, connect_timeout_s=2))
        return str(info.value)

    # Nothing listens on port 1: libpq's own error, with the host and port.
    message, baseline = error(form(password, "127.0.0.1", 1)), error(form("x", "127.0.0.1", 1))
    assert message == baseline and "127.0.0.1" in message
    _assert_nothing_of(password, message, baseline)


MALFORMED = [
    # (a string libpq cannot parse or would misread, the secret part of it)
    ("host=127.0.0.1 user=alice password=Qz7Kx9xx defg=hijk", "Qz7Kx9xx"),
    ("host=127.0.0.1 user=alice password=my Qz7Kx9 secret", "Qz7Kx9 secret"),
    ("host=127.0.0.1 password='Qz7Kx9 xyzzyq", "Qz7Kx9 xyzzyq"),
    ("postgresql://alice:Qz@7Kx9w@127.0.0.1/db", "Qz@7Kx9w"),
    ("postgresql://alice:Qz/7Kx9w@127.0.0.1/db", "Qz/7Kx9w"),
    ("postgresql://alice:Qz7Kx9%zzpw@127.0.0.1/db", "Qz7Kx9%zzpw"),
    ("postgresql://alice@127.0.0.1/db?password=Qz7Kx9&pw=x&y", "Qz7Kx9&pw"),
    ("postgresql://alice:Qz7Kü9@wörd@127.0.0.1/db", "Qz7Kü9@wörd"),
    ("postgresql://alice:Qz7?Kx9@wörd@127.0.0.1/db", "Qz7?Kx9@wörd"),
    ("postgresql://alice:Qz7Kx9/wörd@127.0.0.1/db", "Qz7Kx9/wörd"),
    ("postgresql://alice:8812/Qz7Kx9@127.0.0.1/db", "8812/Qz7Kx9"),
]


@pytest.mark.parametrize("dsn, secret", MALFORMED)
def test_malformed_dsn_is_refused_showing_nothing_of_it(dsn, secret, tmp_path, monkeypatch):
    with pytest.raises(DsnSyntaxError) as info:
        check_dsn(dsn)
    message = str(info.value)
    assert "--db_url" in message and "%40" in message and "quote" in message
    for piece in _fragments(secret) | {"alice", "127.0.0.1"}:
        assert piece not in message
    assert mask_dsn(dsn) == "(an unparsable connection string, not shown)"
    # Given by each route, the flag is refused with exit 2 before anything runs.
    argv = ["--table", "t", "--label", "y", "--output_dir", str(tmp_path / "o")]
    url_file = tmp_path / "url"
    url_file.write_text(dsn + "\n")
    for extra, env, route in [
        (["--db_url", dsn], {}, "--db_url"),
        ([], {"DATABASE_URL": dsn}, "$DATABASE_URL"),
        (["--db_url_file", str(url_file)], {}, "--db_url_file"),
    ]:
        with monkeypatch.context() as patch, pytest.raises(UsageError) as info:
            for key, value in env.items():
                patch.setenv(key, value)
            parse_args(argv + extra)
        assert route in str(info.value)
        for piece in _fragments(secret):
            assert piece not in str(info.value)


def test_unencoded_at_or_slash_in_a_url_password_would_leak_into_host_or_dbname():
    # What libpq does with them: part of the password becomes the host or dbname,
    # which its errors show ("could not translate host name "ter2pw@127.0.0.1"").
    parsed = psycopg2.extensions.parse_dsn("postgresql://alice:Hun@ter2pw@127.0.0.1/db")
    assert parsed["host"] == "ter2pw@127.0.0.1"
    parsed = psycopg2.extensions.parse_dsn("postgresql://alice:Hun/ter2pw@127.0.0.1/db")
    assert parsed["port"] == "Hun" and parsed["dbname"] == "ter2pw@127.0.0.1/db"
    # Encoded, both are fine and the URL is accepted; so are `?`, `#` and `:`,
    # which libpq reads as part of the password, and an encoded `@` in a dbname.
    assert check_dsn("postgresql://alice:Hun%40ter2%2Fpw@127.0.0.1/db")["password"] == (
        "Hun@ter2/pw"
    )
    for password in ("a?b", "a#b", "a:b", "a%3F"):
        assert check_dsn(f"postgresql://alice:{password}@h:5432/db")["host"] == "h"
    assert check_dsn("postgresql://h/a%40b")["dbname"] == "a@b"
    assert check_dsn("postgresql://alice@h/db?password=a@b")["password"] == "a@b"
    assert check_dsn("postgresql://h1:5432,h2:5433/db")["port"] == "5432,5433"


def test_secrets_in_options_and_query_parameters_are_masked_and_scrubbed(database_url):
    dsn = "postgresql://alice@h/db?password=Hunter2qp&options=-c%20app.token%3DTok3nXYZ"
    masked = mask_dsn(dsn)
    assert "Hunter2qp" not in masked and "Tok3nXYZ" not in masked
    assert masked == "postgresql://alice:***@h/db?options=***"
    # The server echoes a bad `options` value; the error shows it scrubbed.
    base = check_dsn(database_url)
    kv = " ".join(f"{k}='{v}'" for k, v in base.items())
    bad = f"{kv} options='-c statement_timeout=Tok3nXYZsecret'"
    with pytest.raises(DatabaseError) as info:
        connect(Dsn(bad))
    assert "statement_timeout" in str(info.value)
    assert "Tok3nXYZ" not in str(info.value)


def test_db_url_file_keeps_the_password_out_of_argv(database_url, tmp_path, capsys):
    url_file = tmp_path / "db_url"
    url_file.write_text(database_url + "\n")
    assert main(["--db_url_file", str(url_file), "--table", "missing_s2t", "--label",
                 "y", "--output_dir", str(tmp_path / "o")]) == 1
    assert "missing_s2t" in capsys.readouterr().err  # connected with the file's URL
    with pytest.raises(UsageError, match="at most one of `--db_url` and `--db_url_file`"):
        parse_args(["--db_url", database_url, "--db_url_file", str(url_file),
                    "--table", "t", "--label", "y", "--output_dir", "o"])
    with pytest.raises(UsageError, match="--db_url_file.*cannot read it"):
        parse_args(["--db_url_file", str(tmp_path / "nope"), "--table", "t",
                    "--label", "y", "--output_dir", "o"])


def test_help_says_how_to_keep_the_password_out_of_the_process_list():
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, "COLUMNS": "200"}, timeout=120,
    )
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0
    for needle in ("visible to other users", "(ps)", "PGPASSWORD", "~/.pgpass",
                   "$DATABASE_URL", "--db_url_file", "%40"):
        assert needle in text, needle
