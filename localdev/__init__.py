"""Local development helpers: embedded PostgreSQL, sample table; not used by the job."""
