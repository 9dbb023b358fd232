"""What every CLI in tools/ shares: rich logging, progress bars, clean one-line errors, device/thread
options, repo paths."""
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from srcore.runtime import configure_allocator

# Every CLI imports this module first: keep glibc from mmapping and unmapping every large activation
# (srcore/runtime.py; a 2x faster forward pass for large images on this CPU).
configure_allocator()

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> logging.Logger:
    # markup stays off (RichHandler's default): paths and user strings in log lines are printed as they are
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)])
    return logging.getLogger("srnas")


def progress(remaining: bool = False) -> Progress:
    """A transient rich progress bar: description (literal, no markup), bar, done/total, elapsed (and time left)."""
    columns = [TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True)


def print_error(label: str, message: str, style: str = "bold red") -> None:
    """`label: message` on one stderr line; the message is printed literally (no Rich markup, no :emoji:)."""
    console.print(Text.assemble((f"{label}:", style), " ", " ".join(str(message).split())), highlight=False,
                  soft_wrap=True)


def run_cli(main: Callable[[list[str] | None], int]) -> None:
    """Run `main`; expected errors (bad input) print one red line and exit 2, without a traceback."""
    from srcore.checkpoint import CheckpointError
    from srcore.config import ConfigError
    from srcore.data import DataError
    from srcore.imageio import ImageReadError

    try:
        sys.exit(main(None))
    except (CheckpointError, ConfigError, DataError, ImageReadError, KeyError, ValueError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print_error("error", msg)
        sys.exit(2)
    except KeyboardInterrupt:
        print_error("interrupted", "stopped by Ctrl-C")
        sys.exit(130)


# --- --device and --threads ----------------------------------------------------------------------------


def check_device(device: str, flag: str = "--device") -> str:
    """A torch device string that this torch can use: one-line ValueErrors for 'gpu', CUDA on a CPU build, ..."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{flag} {device}: not a device name (expected cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{flag} {device}: CUDA is not available ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {device}: there are {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"{flag} {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"{flag} {device}: unsupported device type {dev.type!r} (expected cpu, cuda or mps)")
    return device


def check_threads(threads: int | None, flag: str = "--threads") -> int | None:
    """None (torch's default) or an integer >= 1."""
    if threads is not None and threads < 1:
        raise ValueError(f"{flag} {threads}: must be >= 1 (omit it for torch's default)")
    return threads


def setup_runtime(args) -> None:
    """Validate `args.device` / `args.threads` (where the CLI has them) and apply the thread count."""
    import torch

    if getattr(args, "device", None) is not None:
        check_device(args.device)
    threads = check_threads(getattr(args, "threads", None))
    if threads is not None:
        torch.set_num_threads(threads)
