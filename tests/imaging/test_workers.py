"""Preprocess's worker processes end with their parent, and one work folder takes one writer at a time."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mammofuse.cli import main
from mammofuse.storage import InUse, locked
from tests.cohort.helpers import edit_config


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie no longer runs (nobody may reap it in a container)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_workers_die_with_a_killed_preprocess(ready):
    edit_config(ready, preprocess={"size": [512, 256]})  # a few seconds of work for two workers
    argv = [sys.executable, "-m", "mammofuse", "preprocess", str(ready / "cohort.toml"), "--workers", "2"]
    proc = subprocess.Popen(argv, env={**os.environ, "MAMMOFUSE_NO_PROGRESS": "1"}, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(workers := children(proc.pid)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "no workers seen"
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while any(running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(running(w) for w in workers), "a worker outlived its killed parent"


def test_a_second_writer_in_one_work_folder_is_refused_naming_the_first(ready, capsys):
    work = ready / "work"
    with locked(work, "preprocess"):  # as another process holding the folder would
        assert main(["split", str(ready / "cohort.toml")]) == 2
    out = capsys.readouterr().out
    assert f"{work}: in use by mammofuse preprocess (process {os.getpid()})" in out
    assert main(["split", str(ready / "cohort.toml")]) == 0  # released


def test_a_lock_held_by_a_killed_process_is_free(tmp_path):
    code = (
        "from pathlib import Path\nfrom mammofuse.storage import locked\n"
        f"with locked(Path({str(tmp_path)!r}), 'x'):\n    print(1, flush=True)\n    input()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "1"
    proc.kill()
    proc.wait()
    with locked(tmp_path, "y"):
        pass


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"])
def test_the_other_processes_of_a_distributed_run_leave_the_lock_to_the_first(
    tmp_path, monkeypatch, variable
):
    with locked(tmp_path, "train"):  # the run's first process
        monkeypatch.setenv(variable, "1")  # another process of the same DDP run (Lightning, torchrun, SLURM)
        with locked(tmp_path, "train"):
            pass
        monkeypatch.setenv(variable, "0")
        with pytest.raises(InUse), locked(tmp_path, "train"):
            pass
