"""who asked: the person who asked for a take's render, and who asked it to stop and when

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('takes') as batch:
        batch.add_column(sa.Column('requested_by', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('cancel_requested_by', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('cancel_requested_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('takes') as batch:
        batch.drop_column('cancel_requested_at')
        batch.drop_column('cancel_requested_by')
        batch.drop_column('requested_by')
