"""Run folders: one writer per folder, no run silently replaced, output paths checked before the work starts.

Every CLI that writes a run folder (tools/train.py, tools/search.py, tools/pipeline.py, tools/compress.py)
claims it first and holds the claim for the run's lifetime:

    from srcore.rundir import claim_run_dir

    OUTPUTS = ("model.pt", "report.json", "metrics.jsonl")          # what this tool writes into --out
    with claim_run_dir(args.out, outputs=OUTPUTS, resume=args.resume, overwrite=args.overwrite,
                       resume_from="model.pt", tool="compress") as run:
        ...  # write into run.path; run.resumed tells whether --resume continues an earlier run

`claim_run_dir` does, in order:
1. checks that the folder is a folder (or can be created) and is writable, and creates it;
2. takes an exclusive lock, `OUT/.srnas.lock` (`fcntl.flock`, holding `{"pid", "host", "started", "argv"}`).
   The kernel drops the lock when its process dies, however it dies (kill -9 included), so a lock file left
   by a dead process is stale: it is taken over, and `run.took_over` holds the dead holder's record. A
   second process gets a `RunDirError` naming the holder's pid and host. Where `flock` is unavailable
   (no fcntl, or a filesystem without locks), the lock file is created with O_EXCL instead and a holder on
   this host whose pid no longer runs is stale;
3. deletes stale temporary files (`.*.tmp`, as `srcore.checkpoint.atomic_save` makes them, and
   `<output>.tmp`) that a process killed during a save left behind (no one else can be writing them: we
   hold the lock);
4. applies the resume/overwrite rule to `outputs` (names of files or folders inside OUT):
   * none of them exists: a fresh run (`--resume` is an error if `resume_from` does not exist);
   * some exist, no flag: `RunDirError` ("OUT already holds a <tool> run (...); pass --resume to continue it,
     --overwrite to start again, or choose another --out") - a finished run is never replaced silently;
   * `--resume`: continue (the tool checks that `resume_from` is consistent with its config);
   * `--overwrite`: those outputs are deleted (nothing else in the folder is touched) and the run starts
     again; `--resume` and `--overwrite` together are an error.

`run.release()` (or leaving the `with` block) removes the lock file and, when the folder was created by this
claim and holds nothing else, the folder: a run that failed before writing anything leaves no trace.
Under torchrun only rank 0 claims the folder (`claim_run_dir(..., enabled=rank == 0)`).

`check_output_file(path, flag)` and `check_output_dir(path, flag)` check other output paths (`--json`,
`--save-images`, ...) before any work: a file path that is a folder, a folder path that is a file, or a
location that cannot be written is a one-line `RunDirError` naming the flag and the path.

Library code: no logging setup, no printing.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on POSIX: the O_EXCL lock file is used
    fcntl = None

LOCK_NAME = ".srnas.lock"


class RunDirError(ValueError):
    """A run folder or output path that cannot be used: locked by another process, holding another run,
    not writable."""


# ----------------------------------------------------------------------------------------------------
# output paths


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_dir(folder: Path, flag: str, target: Path) -> None:
    """Create and delete a file in `folder`: the only test of writability that root, ACLs and read-only
    mounts all answer truthfully."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".srnas-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunDirError(f"{flag} {target}: cannot write in {folder} ({e.strerror})") from None


def _check_dir(path: Path, flag: str, target: Path) -> None:
    if path.exists() and not path.is_dir():
        what = "is a file" if path == target else f"its folder {path} is a file"
        raise RunDirError(f"{flag} {target}: {what}, expected a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise RunDirError(f"{flag} {target}: {base} is a file, so the folder cannot be created")
    _probe_dir(base, flag, target)


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check that `path` is (or can be created as) a writable folder; creates nothing."""
    path = Path(path)
    _check_dir(path, flag, path)
    return path


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Check that `path` can be written as a file (its folder may not exist yet); creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise RunDirError(f"{flag} {path}: is a folder, expected a file path")
    if path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as e:
            raise RunDirError(f"{flag} {path}: cannot write it ({e.strerror})") from None
    _check_dir(path.parent, flag, path)
    return path


# ----------------------------------------------------------------------------------------------------
# the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process (no holder recorded)"
    since = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{when}"


class RunLock:
    """An exclusive lock on a folder: `folder/.srnas.lock`, held until `release()` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.took_over: dict | None = None  # the record of a dead holder whose stale lock was taken over

    def _record(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                           "argv": sys.argv}).encode()

    @staticmethod
    def _read(fd: int) -> dict | None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            data = os.read(fd, 65536)
            rec = json.loads(data.decode()) if data.strip() else None
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return rec if isinstance(rec, dict) else None

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise
        except OSError as e:
            raise RunDirError(f"{self.folder}: cannot create the lock file {self.path.name} ({e.strerror}); "
                              "is the folder writable?") from None

    def busy_error(self, holder: dict | None) -> RunDirError:
        return RunDirError(f"{self.folder} is in use by {_describe(holder)} (lock file {self.path}); wait for it "
                           "to finish or choose another --out")

    def acquire(self, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> RunLock:
        """Take the lock; when another process holds it: raise RunDirError, or with `wait` block until free."""
        if fcntl is None:
            return self._acquire_exclusive_file()
        while True:
            fd = self._open(os.O_RDWR | os.O_CREAT)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = self._read(fd)
                    if not wait:
                        raise self.busy_error(holder) from None
                    if on_wait:
                        on_wait(_describe(holder))
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return self._acquire_exclusive_file()
                raise
            except BaseException:
                os.close(fd)
                raise
            # the holder before us may have deleted the file between our open and our lock: retry on a new one
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.took_over = self._read(fd)  # a record left by a process that died holding the lock
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, self._record())
            self.fd = fd
            return self

    def _acquire_exclusive_file(self) -> RunLock:
        """Fallback without flock: O_EXCL creation; a record of a dead pid on this host is stale."""
        for _ in range(5):
            try:
                fd = self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                try:
                    fd_old = os.open(self.path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                holder = self._read(fd_old)
                os.close(fd_old)
                pid = holder.get("pid") if holder else None
                if holder and holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
                    self.took_over = holder
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                raise self.busy_error(holder) from None
            os.write(fd, self._record())
            self.fd = fd
            return self
        raise RunDirError(f"{self.folder}: could not take the lock file {self.path} (it keeps changing)")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: a waiter then sees a new file and retries
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------------------------------
# claiming a run folder


def stale_temp_files(folder: Path, outputs: Sequence[str] = ()) -> list[Path]:
    """Temporary files of interrupted atomic saves in `folder`: `.*.tmp` and `<output>.tmp`."""
    if not folder.is_dir():
        return []
    found = {p for p in folder.glob(".*.tmp") if p.is_file()}
    found |= {folder / f"{o}.tmp" for o in outputs if (folder / f"{o}.tmp").is_file()}
    return sorted(found)


@dataclass
class RunDir:
    """A claimed run folder (see the module docstring); a context manager that releases the claim."""

    path: Path
    resumed: bool
    created: bool
    lock: RunLock | None
    existing: list[str] = field(default_factory=list)  # outputs that existed when claimed
    removed: list[str] = field(default_factory=list)  # outputs deleted by --overwrite
    cleaned: list[Path] = field(default_factory=list)  # stale temporary files deleted

    @property
    def took_over(self) -> dict | None:
        return self.lock.took_over if self.lock else None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
            if self.created:
                try:
                    self.path.rmdir()  # only when empty: a run that wrote nothing leaves no folder
                except OSError:
                    pass

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_run_dir(out: str | os.PathLike, *, outputs: Sequence[str], resume: bool = False,
                  overwrite: bool = False, resume_from: str | None = None, tool: str = "run",
                  flag: str = "--out", wait: bool = False, on_wait: Callable[[str], None] | None = None,
                  enabled: bool = True) -> RunDir:
    """Claim folder `out` for one run (see the module docstring). `enabled=False` (DDP ranks > 0) checks
    nothing and locks nothing."""
    out = Path(out)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other: choose one")
    if not enabled:
        return RunDir(out, resume, False, None)
    check_output_dir(out, flag)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{flag} {out}: cannot create the folder ({e.strerror})") from None
    lock = RunLock(out)
    try:
        lock.acquire(wait=wait, on_wait=on_wait)
        run = RunDir(out, resume, created, lock)
        for tmp in stale_temp_files(out, outputs):
            tmp.unlink(missing_ok=True)
            run.cleaned.append(tmp)
        run.existing = [o for o in outputs if (out / o).exists()]
        if overwrite:
            for o in run.existing:
                target = out / o
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
                run.removed.append(o)
        elif resume:
            if resume_from is not None and not (out / resume_from).exists():
                raise RunDirError(f"{out / resume_from}: nothing to resume (no {resume_from} in {out}); "
                                  "drop --resume to start a new run")
        elif run.existing:
            raise RunDirError(f"{out} already holds a {tool} run ({', '.join(run.existing)}); pass --resume to "
                              f"continue it, --overwrite to start again, or choose another {flag}")
    except BaseException:
        lock.release()
        if created:
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    return run
