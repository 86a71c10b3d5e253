"""deliveries: the files each take delivered in a delivery profile's format and name (`milimo deliver`)

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'deliveries',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('take_id', sa.Integer(), sa.ForeignKey('takes.id', ondelete='CASCADE'), nullable=False),
        sa.Column('profile', sa.String(64), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('mtime_ns', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(64), nullable=False),
        sa.Column('frames', sa.Integer(), nullable=False),
        sa.Column('first_frame', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('take_id', 'profile', 'kind'),
    )
    op.create_index('ix_deliveries_take_id', 'deliveries', ['take_id'])


def downgrade() -> None:
    op.drop_index('ix_deliveries_take_id', 'deliveries')
    op.drop_table('deliveries')
