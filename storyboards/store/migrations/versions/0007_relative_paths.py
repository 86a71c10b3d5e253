"""relative paths: a take's files recorded relative to the output root it was written under

Takes recorded before this kept absolute paths, so a project folder moved or mounted elsewhere read as missing
takes. A take's mp4 lies at `<root>/<storyboard>/<shot>/take-NNN/<file>`: that gives its root, and every path of
the take under that root (mp4, thumbnail, handoffs in and out, artifacts) becomes relative to it, with the root
recorded beside them (`outputs.root`). Anything that does not follow that layout is left absolute. No column
changes; downgrade writes the absolute paths back.

Revision ID: 0007
Revises: 0006
"""
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

takes = sa.table('takes', sa.column('id', sa.Integer), sa.column('outputs', sa.JSON),
                 sa.column('handoff_out_path', sa.Text), sa.column('handoff_in_path', sa.Text))
artifacts = sa.table('artifacts', sa.column('id', sa.Integer), sa.column('take_id', sa.Integer),
                     sa.column('uri', sa.Text))


def _path(text: str | None) -> Path | None:
    if not text:
        return None
    return Path(unquote(urlparse(text).path)) if text.startswith('file:') else Path(text)


def _root_of(mp4: Path) -> Path | None:
    if mp4.is_absolute() and len(mp4.parts) > 4 and mp4.parent.name.startswith('take-'):
        return mp4.parents[3]
    return None


def _relative(text: str | None, root: Path) -> str | None:
    path = _path(text)
    if path is None or not path.is_absolute() or not path.is_relative_to(root):
        return text
    return path.relative_to(root).as_posix()


def upgrade() -> None:
    conn = op.get_bind()
    for row in conn.execute(sa.select(takes)).all():
        outputs = dict(row.outputs or {})
        root = _root_of(_path(outputs.get('mp4')) or Path())
        if root is None or outputs.get('root'):
            continue
        for key in ('mp4', 'thumbnail'):
            outputs[key] = _relative(outputs.get(key), root)
        outputs['root'] = str(root)
        conn.execute(sa.update(takes).where(takes.c.id == row.id).values(
            outputs=outputs, handoff_out_path=_relative(row.handoff_out_path, root),
            handoff_in_path=_relative(row.handoff_in_path, root)))
        for art in conn.execute(sa.select(artifacts).where(artifacts.c.take_id == row.id)).all():
            conn.execute(sa.update(artifacts).where(artifacts.c.id == art.id).values(uri=_relative(art.uri, root)))


def _absolute(text: str | None, root: Path) -> str | None:
    if not text or text.startswith('file:') or PurePosixPath(text).is_absolute():
        return text
    return str(root / text)


def downgrade() -> None:
    conn = op.get_bind()
    for row in conn.execute(sa.select(takes)).all():
        outputs = dict(row.outputs or {})
        if not outputs.get('root'):
            continue
        root = Path(outputs.pop('root'))
        for key in ('mp4', 'thumbnail'):
            outputs[key] = _absolute(outputs.get(key), root)
        conn.execute(sa.update(takes).where(takes.c.id == row.id).values(
            outputs=outputs, handoff_out_path=_absolute(row.handoff_out_path, root),
            handoff_in_path=_absolute(row.handoff_in_path, root)))
        for art in conn.execute(sa.select(artifacts).where(artifacts.c.take_id == row.id)).all():
            uri = _absolute(art.uri, root)
            conn.execute(sa.update(artifacts).where(artifacts.c.id == art.id).values(
                uri=Path(uri).as_uri() if uri and not uri.startswith('file:') else uri))
