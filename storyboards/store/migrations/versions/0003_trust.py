"""trust: storyboard identity and current revision, per-shot leases, take progress, artifact mtimes

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('storyboards') as batch:
        batch.add_column(sa.Column('source_path', sa.Text(), nullable=True))
        batch.add_column(sa.Column('current_revision', sa.Integer(), nullable=True))
    with op.batch_alter_table('takes') as batch:
        batch.add_column(sa.Column('progress', sa.JSON(), nullable=True))
    with op.batch_alter_table('artifacts') as batch:
        batch.add_column(sa.Column('mtime_ns', sa.BigInteger(), nullable=True))
    op.create_table(
        'shot_leases',
        sa.Column('shot_pk', sa.Integer(), sa.ForeignKey('shots.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('holder', sa.String(length=255), nullable=False),
        sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('shot_leases')
    with op.batch_alter_table('artifacts') as batch:
        batch.drop_column('mtime_ns')
    with op.batch_alter_table('takes') as batch:
        batch.drop_column('progress')
    with op.batch_alter_table('storyboards') as batch:
        batch.drop_column('current_revision')
        batch.drop_column('source_path')
