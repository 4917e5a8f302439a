"""``python -m edgefleet.controller.migrations MESSAGE``: autogenerate the next revision."""

from __future__ import annotations

import sys

from alembic import command
from alembic.script import ScriptDirectory
from edgefleet.controller.db import alembic_config
from sqlalchemy import create_engine


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].strip():
        print("usage: python -m edgefleet.controller.migrations 'what changed'", file=sys.stderr)
        return 2
    config = alembic_config()
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    heads = ScriptDirectory.from_config(config).get_heads()
    rev_id = f"{max(int(h) for h in heads) + 1:04d}"
    engine = create_engine("sqlite://")  # a scratch database at head to compare with
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        command.revision(config, argv[0], autogenerate=True, rev_id=rev_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
