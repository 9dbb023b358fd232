"""What every CLI in tools/ shares: rich logging, progress bars, clean one-line errors, repo paths."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> logging.Logger:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)])
    return logging.getLogger("srnas")


def progress(remaining: bool = False) -> Progress:
    """A transient rich progress bar: description, bar, done/total, elapsed (and, if asked, time left)."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True)


def run_cli(main: Callable[[list[str] | None], int]) -> None:
    """Run `main`; expected errors (bad input) print one red line and exit 2, without a traceback."""
    from srcore.checkpoint import CheckpointError
    from srcore.config import ConfigError
    from srcore.data import DataError
    from srcore.imageio import ImageReadError

    try:
        sys.exit(main(None))
    except (CheckpointError, ConfigError, DataError, ImageReadError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
        sys.exit(2)
