"""Alembic environment: runs migrations on the URL given by bot.db.alembic_config."""

from __future__ import annotations

from alembic import context

import bot.admin_models  # model switches and FAQ entries share the metadata
import bot.handoff_models  # handoff tables share the metadata
import bot.kb_models  # noqa: F401  (knowledge-base tables share the metadata)
from bot.db import make_engine
from bot.models import metadata

config = context.config


def run_migrations_online() -> None:
    """Run migrations with a connection of our own engine (SQLite pragmas included)."""
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "sqlalchemy.url is set by bot.db.alembic_config"
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
