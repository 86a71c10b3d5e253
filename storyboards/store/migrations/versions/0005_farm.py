"""farm: the worker that renders a take and its heartbeat

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('takes') as batch:
        batch.add_column(sa.Column('worker', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('takes') as batch:
        batch.drop_column('heartbeat_at')
        batch.drop_column('worker')
