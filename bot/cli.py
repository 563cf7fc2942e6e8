"""The `ketepai` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from bot.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    """Start the action server, Rasa and the gateway in the foreground (--prod: supervised,
    KTP_GATEWAY_WORKERS gateways and KTP_RASA_WORKERS Rasa workers on PostgreSQL and Redis)."""
    if args.prod:
        from bot import prod

        return prod.run(_settings())
    from bot import runner

    return runner.run(_settings())


def cmd_serve(_args: argparse.Namespace) -> int:
    """Start the gateway alone (Rasa and the action server must be running)."""
    from aiohttp import web

    from bot.app import create_app

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        # Production mode: several gateway processes share the port (the kernel balances).
        reuse_port=os.environ.get("KTP_REUSE_PORT") == "1",
    )
    return 0


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    """Bring the database schema up to date."""
    from bot import db

    db.upgrade(_settings().database_url)
    print("database schema is up to date")
    return 0


def cmd_nlu_names(_args: argparse.Namespace) -> int:
    """Regenerate lookups, synonyms and the jieba dictionary from kb/names.yml."""
    from bot.nlu_names import generate

    changed = generate()
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("name files are up to date")
    return 0


def cmd_kb_check(_args: argparse.Namespace) -> int:
    """Load every card and report how many there are (fails on a malformed or unsafe card)."""
    from bot.knowledge import KnowledgeError, load_cards

    try:
        cards = load_cards()
    except KnowledgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    published = sum(c.status == "published" for c in cards)
    print(f"{len(cards)} cards, {published} published")
    return 0


def cmd_wechat_menu(args: argparse.Namespace) -> int:
    """Show the custom menu (问专家 / 常见问题 / 我的求助); --apply sends it to WeChat."""
    import asyncio
    import json

    from bot.replies import MENU

    print(json.dumps(MENU, ensure_ascii=False, indent=2))
    if not args.apply:
        print("(not applied; add --apply to send it to WeChat)")
        return 0
    from bot.menu_apply import apply_menu
    from bot.wechat_client import WeChatError

    try:
        asyncio.run(apply_menu(_settings(), MENU))
    except WeChatError as exc:
        print(f"error: WeChat refused the menu: {exc}", file=sys.stderr)
        return 1
    print("menu applied")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="ketepai", description="科特派助手 (Ketepai) tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help=cmd_run.__doc__)
    run.add_argument("--prod", action="store_true", help="production mode (PostgreSQL + Redis)")
    run.set_defaults(func=cmd_run)
    sub.add_parser("serve", help=cmd_serve.__doc__).set_defaults(func=cmd_serve)

    dbp = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    dbp.add_parser("upgrade", help=cmd_db_upgrade.__doc__).set_defaults(func=cmd_db_upgrade)

    nlu = sub.add_parser("nlu", help="NLU data").add_subparsers(dest="nlu", required=True)
    nlu.add_parser("names", help=cmd_nlu_names.__doc__).set_defaults(func=cmd_nlu_names)

    kb = sub.add_parser("kb", help="knowledge base").add_subparsers(dest="kb", required=True)
    kb.add_parser("check", help=cmd_kb_check.__doc__).set_defaults(func=cmd_kb_check)
    from bot.kb_cli import add_commands as add_kb_commands

    add_kb_commands(kb)

    wx = sub.add_parser("wechat", help="WeChat account").add_subparsers(dest="wx", required=True)
    menu = wx.add_parser("menu", help=cmd_wechat_menu.__doc__)
    menu.add_argument("--apply", action="store_true", help="send the menu to WeChat")
    menu.set_defaults(func=cmd_wechat_menu)
    from bot.handoff_cli import add_commands as add_handoff_commands

    add_handoff_commands(sub)
    from bot.admin.cli import add_commands as add_admin_commands

    add_admin_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ketepai` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
