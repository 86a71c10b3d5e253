"""storyboard uid: each storyboard's id in its store, written into its output folder's marker

Two stores rendering a storyboard of the same name into one output root shared its folder, and the second wrote its
take-001 over the first's. The marker now names the store's id for the storyboard as well as its name. Storyboards
recorded before this get an id now; a marker that has none yet is claimed by the first store to render there.

Revision ID: 0008
Revises: 0007
"""
import secrets

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

storyboards = sa.table('storyboards', sa.column('id', sa.Integer), sa.column('uid', sa.String))


def upgrade() -> None:
    with op.batch_alter_table('storyboards') as batch:
        batch.add_column(sa.Column('uid', sa.String(32), nullable=True))
    bind = op.get_bind()
    for (row_id,) in bind.execute(sa.select(storyboards.c.id)).all():
        bind.execute(storyboards.update().where(storyboards.c.id == row_id).values(uid=secrets.token_hex(8)))


def downgrade() -> None:
    with op.batch_alter_table('storyboards') as batch:
        batch.drop_column('uid')
