"""Deleted messages, message kinds on links, ticket ids on deliveries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ticket_id', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_deliveries_provider_id'), ['provider_id'], unique=False)

    with op.batch_alter_table('inbox_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('links', schema=None) as batch_op:
        batch_op.add_column(sa.Column('message_kind', sa.String(length=16), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('links', schema=None) as batch_op:
        batch_op.drop_column('message_kind')

    with op.batch_alter_table('inbox_items', schema=None) as batch_op:
        batch_op.drop_column('deleted_at')

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_provider_id'))
        batch_op.drop_column('ticket_id')

