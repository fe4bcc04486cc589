"""Preprocess's worker processes end with their parent and leave Ctrl-C to it, and one work folder takes
one writer at a time."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mammofuse.cli import main
from mammofuse.parallel import parallel_map
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


def sigint_handler(_job: int) -> str:
    return repr(signal.getsignal(signal.SIGINT))


def slow_mark(job: tuple[Path, int]) -> int:
    folder, number = job
    time.sleep(0.05)
    (folder / str(number)).touch()
    return number


def slow_first(n: int) -> int:
    time.sleep(1.0 if n == 0 else 0.01)
    return n


@pytest.mark.parametrize("where", [{"workers": 2}, {"cluster": "local:2"}])
def test_unordered_results_come_as_their_jobs_finish_not_behind_a_slow_first_one(where):
    """A caller that records each result (preprocess's cache index) lost, at a Ctrl-C, every result held back
    in order behind one slow job: on a cluster's many workers, most of what they had finished. (In order is
    every other caller's, tested with them.)"""
    jobs = list(range(12))
    got = list(parallel_map(slow_first, jobs, ordered=False, **where))
    assert sorted(got) == jobs and got.index(0) > 0  # every one, and some before the slow one


def test_a_worker_leaves_ctrl_c_to_its_parent_and_jobs_not_begun_are_not_run(tmp_path):
    # a terminal's Ctrl-C reaches every process of the command: the workers would each print a traceback
    assert set(parallel_map(sigint_handler, list(range(4)), workers=2)) == {repr(signal.SIG_IGN)}
    jobs = [(tmp_path, n) for n in range(60)]
    for _ in parallel_map(slow_mark, jobs, workers=2, chunksize=1):
        break  # as Ctrl-C in the parent, or an error there, ends the loop
    assert len(list(tmp_path.iterdir())) < 20  # not the 60: the pool did not work through its queue
    # and its thread is joined: left to the interpreter's exit, it raced it (a traceback after Ctrl-C)
    assert not [t for t in threading.enumerate() if type(t).__name__ == "_ExecutorManagerThread"]


def test_a_ctrl_c_during_a_cluster_map_ends_it_at_the_next_result_and_gives_the_handler_back():
    # a KeyboardInterrupt inside Dask's client calls races its event loop (a logged NameError traceback)
    before, seen = signal.getsignal(signal.SIGINT), []
    with pytest.raises(KeyboardInterrupt):
        for n in parallel_map(abs, list(range(8)), cluster="local:1"):
            seen.append(n)
            if n == 2:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C while the caller works on a result
                seen.append("finished")
    assert seen == [0, 1, 2, "finished"]
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.skipif(sys.platform != "linux", reason="process groups")
@pytest.mark.parametrize("where", [["--workers", "2"], ["--cluster", "local:2"]])
def test_ctrl_c_on_preprocess_says_one_line_and_a_rerun_finishes(ready, where, capsys):
    edit_config(ready, preprocess={"size": [512, 256]})  # a few seconds of work for two workers
    table, cache = ready / "work" / "preprocessed.csv", ready / "work" / "cache"
    before, cached = table.read_bytes(), len(list(cache.rglob("*.npy")))  # of the first size
    argv = [sys.executable, "-m", "mammofuse", "preprocess", str(ready / "cohort.toml"), *where]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "MAMMOFUSE_NO_PROGRESS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground command
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even from a background shell
    )
    deadline = time.monotonic() + 60
    while len(list(cache.rglob("*.npy"))) < cached + 4:  # the workers are at work
        assert proc.poll() is None and time.monotonic() < deadline, "no work seen"
        time.sleep(0.01)
    time.sleep(0.2)  # their results reach the command (a cluster's within tens of milliseconds)
    assert proc.poll() is None, "finished before the key"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: every process of the group gets it
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "CancelledError" not in err, err  # Dask's closing races, once logged by its workers
    assert "interrupted; rerun the same command" in out
    assert table.read_bytes() == before
    capsys.readouterr()
    assert main(["preprocess", str(ready / "cohort.toml"), *where]) == 0
    assert table.read_bytes() != before
    # the images finished before the key are not decoded again (the index was saved every 5 s only)
    reused = re.search(r"(\d+) reused from the cache", capsys.readouterr().out)
    assert reused and int(reused[1]) >= 2


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
