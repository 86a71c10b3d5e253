"""pins: a take a person chose stays the shot's current take

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('shots') as batch:
        batch.add_column(sa.Column('pinned_take_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('pinned_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key('fk_shots_pinned_take_id_takes', 'takes', ['pinned_take_id'], ['id'],
                                 ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('shots') as batch:
        batch.drop_constraint('fk_shots_pinned_take_id_takes', type_='foreignkey')
        batch.drop_column('pinned_at')
        batch.drop_column('pinned_take_id')
