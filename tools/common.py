"""What every CLI in tools/ shares: rich logging, progress bars, clean one-line errors, repo paths."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

# tools/compress.py shares its name with the `compress` package and tools/ is first on sys.path when a CLI
# runs: put the repository root before it, so `import compress` (used to rebuild compressed checkpoints)
# finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from srcore.runtime import configure_allocator

# Every CLI imports this module first: keep glibc from mmapping and unmapping every large activation
# (srcore/runtime.py; a 2x faster forward pass for large images on this CPU).
configure_allocator()

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> logging.Logger:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)])
    return logging.getLogger("srnas")


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


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
