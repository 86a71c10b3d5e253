"""seams: seam QA per join between two takes (handoff cuts, segment boundaries, hard cuts)

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'seams',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('storyboard_id', sa.Integer(), sa.ForeignKey('storyboards.id', ondelete='CASCADE'), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('left_take_id', sa.Integer(), sa.ForeignKey('takes.id', ondelete='CASCADE'), nullable=False),
        sa.Column('right_take_id', sa.Integer(), sa.ForeignKey('takes.id', ondelete='CASCADE'), nullable=False),
        sa.Column('frame', sa.Integer(), nullable=False),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.Column('score', sa.Double(), nullable=False),
        sa.Column('flagged', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('left_take_id', 'right_take_id', 'frame'),
    )


def downgrade() -> None:
    op.drop_table('seams')
