"""DSN masking: no password survives in any form."""

import pytest

from pipeline.sources.postgres.connection import Dsn, mask_dsn


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://alice:s3cr3t@db.example:5432/prod",
        "postgres://alice:s3cr3t@db.example/prod?sslmode=require",
        "postgresql://alice@db.example/prod?password=s3cr3t&sslmode=require",
        "host=db.example user=alice password=s3cr3t dbname=prod",
        "host=db.example user=alice password='s3 cr3t' dbname=prod",
    ],
)
def test_mask_dsn_hides_password(dsn):
    masked = mask_dsn(dsn)
    assert "s3cr3t" not in masked and "s3 cr3t" not in masked
    assert "db.example" in masked and "***" in masked


def test_dsn_repr_and_str_are_masked():
    dsn = Dsn("postgresql://alice:s3cr3t@h/db")
    assert "s3cr3t" not in repr(dsn) and "s3cr3t" not in str(dsn)
    assert "s3cr3t" not in repr((dsn,))
