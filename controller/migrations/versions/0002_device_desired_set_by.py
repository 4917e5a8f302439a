"""Device.desired_set_by: what last set a device's desired version (the fleet view's BY).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("device", sa.Column("desired_set_by", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("desired_set_by")
