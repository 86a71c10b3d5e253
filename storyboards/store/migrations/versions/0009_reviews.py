"""reviews: a take's review states and notes, with who and when; who pinned a shot's take

A director approves, rejects or asks for changes on a take, and writes notes on it (on a frame, a frame range or the
whole take). Every event is a row of its own, never changed, so the history stays; the newest state is the take's.
An approval chooses the take for its shot as a pin does, and the shot records who chose it.

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'reviews',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('take_id', sa.Integer(), sa.ForeignKey('takes.id', ondelete='CASCADE'), nullable=False),
        sa.Column('state', sa.String(16), nullable=True),
        sa.Column('text', sa.Text(), nullable=True),
        sa.Column('frame', sa.Integer(), nullable=True),
        sa.Column('frame_end', sa.Integer(), nullable=True),
        sa.Column('author', sa.String(255), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_reviews_take_id', 'reviews', ['take_id'])
    with op.batch_alter_table('shots') as batch:
        batch.add_column(sa.Column('pinned_by', sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('shots') as batch:
        batch.drop_column('pinned_by')
    op.drop_index('ix_reviews_take_id', 'reviews')
    op.drop_table('reviews')
