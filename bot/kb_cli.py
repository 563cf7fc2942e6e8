"""`ketepai kb ...` commands that work on the knowledge base in the database."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dotenv import dotenv_values

DEFAULT_DB_URL = "sqlite:///var/ketepai.db"


def _say(message: str, err: bool = False) -> None:
    """A line for the operator (a command-line tool, not server code)."""
    (sys.stderr if err else sys.stdout).write(message + "\n")


def database_url() -> str:
    """DATABASE_URL from the environment or `.env`, as the rest of the product reads it."""
    from_file = dotenv_values(".env") if Path(".env").is_file() else {}
    return os.environ.get("DATABASE_URL") or from_file.get("DATABASE_URL") or DEFAULT_DB_URL


def load_into(url: str) -> str:
    """Load the curated cards into the database at `url`; a one-line summary of what changed."""
    from bot import db
    from bot.kb_store import load_curated

    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        with db.make_sessionmaker(engine)() as session, session.begin():
            c = load_curated(session)
    finally:
        engine.dispose()
    return (
        f"curated cards: {c.inserted} new, {c.updated} updated, {c.unchanged} unchanged, "
        f"{c.retired} retired"
    )


def cmd_kb_load(args: argparse.Namespace) -> int:
    """Load kb/cards/*.yml into the database (idempotent; refuses unsafe cards)."""
    from bot.knowledge import KnowledgeError

    try:
        _say(load_into(args.database_url or database_url()))
    except KnowledgeError as exc:
        _say(f"error: {exc}", err=True)
        return 1
    return 0


def cmd_kb_import_pestdb(args: argparse.Namespace) -> int:
    """Import a pest/disease database (dasinong schema: PESTDISASTER.sql SOLUTION.sql)."""
    from bot import db
    from bot.kb_import import import_pestdb
    from bot.kb_sqldump import DumpError

    url = args.database_url or database_url()
    for path in (args.pestdisaster, args.solution):
        if not path.is_file():
            _say(f"error: {path} not found", err=True)
            return 2
    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        with db.make_sessionmaker(engine)() as session, session.begin():
            r = import_pestdb(
                session, args.pestdisaster, args.solution, publish=args.publish, source=args.source
            )
    except DumpError as exc:
        _say(f"error: {exc}", err=True)
        return 1
    finally:
        engine.dispose()
    c = r.counts
    _say(
        f"{r.cards} cards from {args.pestdisaster.name}: {c.inserted} new, {c.updated} updated, "
        f"{c.unchanged} unchanged; {r.published} published, {r.unsafe} kept as drafts by the "
        f"pesticide safety check (flagged 'unsafe')"
    )
    return 0


def cmd_kb_failing(args: argparse.Namespace) -> int:
    """List cards that farmers more often say did not help."""
    from bot import db
    from bot.kb_store import failing_cards

    engine = db.make_engine(args.database_url or database_url())
    try:
        with db.make_sessionmaker(engine)() as session:
            rows = failing_cards(session, args.min_votes)
    finally:
        engine.dispose()
    for card_id, good, bad in rows:
        _say(f"{card_id}\t有用 {good}\t没解决 {bad}")
    if not rows:
        _say("no card fails often")
    return 0


def add_commands(kb: argparse._SubParsersAction) -> None:
    """Register the database-backed `kb` sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="default: DATABASE_URL or sqlite:///var/ketepai.db")
    kb.add_parser("load", help=cmd_kb_load.__doc__, parents=[common]).set_defaults(func=cmd_kb_load)
    imp = kb.add_parser("import-pestdb", help=cmd_kb_import_pestdb.__doc__, parents=[common])
    imp.add_argument("pestdisaster", type=Path, metavar="PESTDISASTER.sql")
    imp.add_argument("solution", type=Path, metavar="SOLUTION.sql")
    imp.add_argument("--publish", action="store_true", help="publish cards that pass the check")
    imp.add_argument("--source", default="dasinong", help="name of the database (card id prefix)")
    imp.set_defaults(func=cmd_kb_import_pestdb)
    fail = kb.add_parser("failing", help=cmd_kb_failing.__doc__, parents=[common])
    fail.add_argument("--min-votes", type=int, default=3)
    fail.set_defaults(func=cmd_kb_failing)
