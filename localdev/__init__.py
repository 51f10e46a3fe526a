"""Local development helpers: an embedded PostgreSQL and the sample table (not the job)."""
