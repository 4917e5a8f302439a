"""The database's Alembic migrations; the controller upgrades to head at start.

``versions/0001_baseline.py`` is the schema of the last release made with ``create_all``;
each later revision is one change. To add one after changing ``controller/models/``::

    python -m edgefleet.controller.migrations "what changed"

writes ``versions/NNNN_what_changed.py`` from the difference between the models and a
database at head; ``ruff format`` it, read it (a rename shows as drop + add, a new
NOT NULL column on a table with rows needs a server_default) and commit it.
``tests/controller/test_migrations.py`` fails while the models and the migrations differ.
"""
