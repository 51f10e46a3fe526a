"""sql2tfrecord: PostgreSQL table -> tf.Transform -> sharded TFRecords, with Apache Beam.

The same file serves `pip install -e .` locally and Beam's `--setup_file` for remote
workers (Dataflow, Flink): the workers install the three packages and the pinned stack.
"""

import setuptools

REQUIRED = [
    # These resolve together on Python 3.10-3.12 (checked on 3.11).
    "apache-beam[gcp]>=2.77,<2.78",
    "tensorflow>=2.21,<2.22",
    "tensorflow-transform>=1.21,<1.22",
    "tfx-bsl>=1.21,<1.22",
    "pyarrow>=14",
    "psycopg2-binary>=2.9,<3",
    # The MySQL/MariaDB source (C extension); 9.x clashes with OpenSSL here
    # (bench/RESULTS.md, MySQL client choice).
    "mysql-connector-python>=8.4,<9",
    "numpy",
    "pyyaml>=6",
    "pglast>=7,<9",  # PostgreSQL's own parser: --query must be one read-only statement
    "isal>=1.6",  # ISA-L gzip for the TFRecord shards (~4x zlib at level 1)
]

EXTRAS = {
    # An embedded, throwaway PostgreSQL for run_local.sh and the tests; pymysql to
    # set up the throwaway MariaDB (localdev.embedded_mariadb) and load its tables.
    "local": ["pgserver==0.1.4", "psutil", "pymysql>=1.1,<2"],
    "test": [
        "pytest>=8",
        "hypothesis>=6",
        "pgserver==0.1.4",
        "psutil",
        "pymysql>=1.1,<2",
    ],
    # bench/mysql_clients.py: the MySQL clients it compares (issue 20). 8.4.0: the
    # last mysql-connector-python whose C extension loads after pyarrow/hashlib here
    # (9.x: static-TLS / OPENSSL_3.2 errors against Debian 12's OpenSSL 3.0).
    "bench-mysql": [
        "connectorx>=0.4.6,<0.5",
        "mysql-connector-python==8.4.0",
        "PyMySQL>=1.1,<2",
        "mariadb==2.0.0rc2",
    ],
}

setuptools.setup(
    name="sql2tfrecord",
    version="0.1.0",
    description="PostgreSQL or MySQL/MariaDB to TFRecords with tf.Transform, on Apache Beam",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["pipeline*", "transforms*", "trainer*", "localdev*"]),
    install_requires=REQUIRED,
    extras_require=EXTRAS,
)
