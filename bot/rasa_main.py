"""Rasa's own command line, with our measured speed-ups applied first.

    python -m bot.rasa_main run --enable-api ...     (what `ketepai run` starts)

Everything after the module name is passed to Rasa's CLI unchanged. Sanic forks its workers from
this process, so the patches hold in every worker. See bot/rasa_speedups.py for what is patched
and why.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Apply the speed-ups, then hand over to `rasa`'s main."""
    from bot import rasa_speedups

    rasa_speedups.apply()
    from rasa.__main__ import main as rasa_cli

    sys.argv[0] = "rasa"
    rasa_cli()


if __name__ == "__main__":
    main()
