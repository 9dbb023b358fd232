"""srcore.rundir (claiming and locking run folders, output path checks) and srcore.jsonl (torn last lines)."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO

from srcore import rundir
from srcore.jsonl import read_jsonl, trim_jsonl
from srcore.rundir import LOCK_NAME, RunDirError, RunLock, check_output_dir, check_output_file, claim_run_dir

OUTPUTS = ("last.pt", "metrics.jsonl", "sub")

# a process that claims a folder, says so, and waits (only srcore.rundir is imported: it starts fast)
HOLDER = """
import sys, time
from srcore.rundir import claim_run_dir
run = claim_run_dir(sys.argv[1], outputs=(), resume=True)
print("claimed", flush=True)
time.sleep(float(sys.argv[2]))
"""


def start_holder(folder, seconds: float = 60.0) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)], stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout.readline().strip() == "claimed"
    return p


@pytest.fixture()
def holder(tmp_path):
    """Another process holding a claim on tmp_path/run."""
    p = start_holder(tmp_path / "run")
    yield p
    p.kill()
    p.wait()


# --- the resume / overwrite rule -------------------------------------------------------------------------


def test_fresh_claim_creates_locks_and_releases(tmp_path):
    out = tmp_path / "a" / "b"
    with claim_run_dir(out, outputs=OUTPUTS) as run:
        assert out.is_dir() and run.created and not run.resumed
        rec = json.loads((out / LOCK_NAME).read_text())
        assert rec["pid"] == os.getpid() and rec["host"]
        (out / "last.pt").write_text("x")
    assert not (out / LOCK_NAME).exists()
    assert (out / "last.pt").read_text() == "x"


def test_a_failed_run_that_wrote_nothing_leaves_no_folder(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(KeyError), claim_run_dir(out, outputs=OUTPUTS):
        raise KeyError("failed before writing")
    assert not out.exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    with claim_run_dir(existing, outputs=OUTPUTS):
        pass
    assert existing.is_dir()  # a folder that was there before is never removed


def test_existing_run_is_refused_without_a_flag(tmp_path):
    (tmp_path / "last.pt").write_text("finished run")
    with pytest.raises(RunDirError, match=r"already holds a training run \(last\.pt\); pass --resume to continue "
                                          r"it, --overwrite to start again"):
        claim_run_dir(tmp_path, outputs=OUTPUTS, tool="training")
    assert (tmp_path / "last.pt").read_text() == "finished run"
    assert not (tmp_path / LOCK_NAME).exists()  # the refusal released its lock


def test_resume_keeps_and_overwrite_deletes_only_the_outputs(tmp_path):
    for name in ("last.pt", "metrics.jsonl", "notes.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x").write_text("x")
    with claim_run_dir(tmp_path, outputs=OUTPUTS, resume=True, resume_from="last.pt") as run:
        assert run.resumed and sorted(run.existing) == ["last.pt", "metrics.jsonl", "sub"]
    assert (tmp_path / "last.pt").exists()
    with claim_run_dir(tmp_path, outputs=OUTPUTS, overwrite=True) as run:
        assert sorted(run.removed) == ["last.pt", "metrics.jsonl", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing else is touched


def test_resume_with_nothing_to_resume_and_contradicting_flags(tmp_path):
    with pytest.raises(RunDirError, match=r"last\.pt: nothing to resume"):
        claim_run_dir(tmp_path / "empty", outputs=OUTPUTS, resume=True, resume_from="last.pt")
    assert not (tmp_path / "empty").exists()
    with pytest.raises(RunDirError, match="contradict"):
        claim_run_dir(tmp_path, outputs=OUTPUTS, resume=True, overwrite=True)


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path):
    for name in (".last.pt.abc123.tmp", ".best.pt.x.tmp", "metrics.jsonl.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / "keep.tmp").write_text("not ours")
    with claim_run_dir(tmp_path, outputs=OUTPUTS) as run:
        assert sorted(p.name for p in run.cleaned) == [".best.pt.x.tmp", ".last.pt.abc123.tmp", "metrics.jsonl.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp"]


# --- the lock ----------------------------------------------------------------------------------------------


def test_second_claim_names_the_holder_pid(tmp_path, holder):
    with pytest.raises(RunDirError) as e:
        claim_run_dir(tmp_path / "run", outputs=OUTPUTS, resume=True)
    msg = str(e.value)
    assert f"in use by pid {holder.pid} on " in msg and LOCK_NAME in msg and "\n" not in msg


def test_two_claims_in_one_process_exclude_each_other(tmp_path):
    with claim_run_dir(tmp_path, outputs=OUTPUTS):
        with pytest.raises(RunDirError, match=f"pid {os.getpid()}"):
            claim_run_dir(tmp_path, outputs=OUTPUTS, resume=True)
    with claim_run_dir(tmp_path, outputs=OUTPUTS, resume=True):  # free again
        pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    p = start_holder(tmp_path / "run")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # kill -9 left the lock file behind
    with claim_run_dir(tmp_path / "run", outputs=OUTPUTS, resume=True) as run:
        assert run.took_over is not None and run.took_over["pid"] == p.pid
        assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_wait_blocks_until_the_holder_is_done(tmp_path):
    p = start_holder(tmp_path / "run", seconds=0.5)
    waited = []
    t0 = time.perf_counter()
    with claim_run_dir(tmp_path / "run", outputs=OUTPUTS, resume=True, wait=True, on_wait=waited.append):
        assert p.poll() is not None or time.perf_counter() - t0 > 0.3
    p.wait()
    assert len(waited) == 1 and f"pid {p.pid}" in waited[0]


def test_fallback_without_flock(tmp_path, monkeypatch):
    """Without fcntl: an O_EXCL lock file; a live holder refuses, a dead one on this host is stale."""
    monkeypatch.setattr(rundir, "fcntl", None)
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(RunDirError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    lock.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": rundir.socket.gethostname()}))
    with RunLock(tmp_path) as taken:
        assert taken.took_over["pid"] == dead.pid
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": "another-host"}))
    with pytest.raises(RunDirError, match="on another-host"):  # cannot tell if it runs: busy
        RunLock(tmp_path).acquire()


def test_many_threads_claiming_at_once_never_hold_it_together(tmp_path):
    holding, most, guard, start = [0], [0], threading.Lock(), threading.Barrier(8)
    outcomes = []

    def claim():
        start.wait()
        try:
            run = claim_run_dir(tmp_path, outputs=OUTPUTS, resume=True)
        except RunDirError:
            outcomes.append("busy")
            return
        with guard:
            holding[0] += 1
            most[0] = max(most[0], holding[0])
        time.sleep(0.05)
        with guard:
            holding[0] -= 1
        run.release()
        outcomes.append("won")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and "won" in outcomes and len(outcomes) == 8


# --- output paths ------------------------------------------------------------------------------------------


def test_output_path_checks(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(RunDirError, match=r"--out .*f\.txt: is a file, expected a folder"):
        check_output_dir(a_file)
    with pytest.raises(RunDirError, match=r"--out .*f\.txt/run: .*f\.txt is a file"):
        check_output_dir(a_file / "run")
    with pytest.raises(RunDirError, match=r"--json .*: is a folder, expected a file path"):
        check_output_file(tmp_path, "--json")
    with pytest.raises(RunDirError, match=r"--json .*f\.txt/r\.json: its folder .*f\.txt is a file"):
        check_output_file(a_file / "r.json", "--json")
    check_output_file(tmp_path / "new" / "deeper" / "r.json", "--json")
    assert not (tmp_path / "new").exists()  # checks create nothing
    with pytest.raises(RunDirError, match="is a file"):
        claim_run_dir(a_file, outputs=OUTPUTS)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(RunDirError, match="cannot write in"):
            check_output_dir(ro / "run")
        with pytest.raises(RunDirError, match="cannot write in"):
            check_output_file(ro / "r.json", "--json")
    finally:
        ro.chmod(0o755)


def test_read_only_filesystem_is_found_by_the_probe(tmp_path, monkeypatch):
    """What root meets on a read-only mount: creating the probe file fails (simulated)."""
    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(rundir.tempfile, "mkstemp", refuse)
    with pytest.raises(RunDirError, match=r"--out .*: cannot write in .* \(Read-only file system\)"):
        claim_run_dir(tmp_path / "run", outputs=OUTPUTS)
    assert not (tmp_path / "run").exists()


# --- JSON lines --------------------------------------------------------------------------------------------


def test_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n\n{"step": 3, "lo')
    with caplog.at_level(logging.WARNING, logger="srnas"):
        assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert "metrics.jsonl:4: dropped a torn last line" in caplog.text
    assert trim_jsonl(path, 1) == 1
    assert path.read_text() == '{"step": 1}\n'


@pytest.mark.parametrize("text,message", [
    ('{"step": 1}\n{"st\n{"step": 3}\n', r"metrics\.jsonl:2: not a JSON object"),
    ('{"step": 1}\n[1, 2]\n', r"metrics\.jsonl:2: expected a JSON object, got list"),
    ('{"step": 1}\n{"loss": 2}\n', r"metrics\.jsonl:2: record without 'step'"),
])
def test_malformed_lines_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        trim_jsonl(path, 10)
    assert path.read_text() == text  # left as it was
