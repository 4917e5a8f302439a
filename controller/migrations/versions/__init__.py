"""The revisions, one file each (Alembic loads them by path; see the package docstring)."""
