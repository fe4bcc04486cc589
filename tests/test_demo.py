import json
import shlex
from pathlib import Path

from mammofuse.cli import main
from mammofuse.demo import run_demo


class TestDemo:
    def test_a_tiny_demo_runs_every_stage_and_ends_with_a_report(self, tmp_path, capsys):
        out = tmp_path / "demo"
        argv = ["demo", "--out", str(out), "--breasts", "60", "--epochs", "1", "--image-size", "64", "52"]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        for stage in ("synth", "ingest", "preprocess", "split", "train", "evaluate", "explain", "report"):
            assert f"mammofuse {stage}" in printed, stage
        run = out / "work" / "runs" / "demo_cpu"
        assert (run / "report.html").is_file() and (run / "bundle" / "model.safetensors").is_file()
        test = json.loads((run / "metrics.json").read_text())["model"]["test"]
        assert test["n"] > 0
        assert min(test["positives"], test["n"] - test["positives"]) < 5  # 60 breasts: a test split of a few
        assert "(no interval)" in printed and "without an interval" in printed  # so no interval of no width
        assert "no interval" in (run / "report.html").read_text()
        assert "epoch   1/1" in printed and "open the report" in printed
        hint = printed.split("read with its own cohort.toml): ")[1].splitlines()[0]  # one line
        for command in hint.split(" && "):  # the commands it suggests run as written
            words = shlex.split(command)
            assert words[0] == "mammofuse" and main(words[1:]) == 0, command
        assert "labels.csv: " in capsys.readouterr().out and (out / "site2" / "validation.html").is_file()
        planning = printed.split("how many would a validation need? ")[1].splitlines()[0]
        assert main(shlex.split(planning)[1:]) == 0 and (run / "samplesize.json").is_file()
        assert f"mammofuse curve {out / 'cohort' / 'cohort.toml'} --work {out / 'work'}" in printed

    def test_a_rerun_keeps_its_cohort_and_a_rerun_with_another_cohort_trains_its_model_again(self, tmp_path):
        calls: list[list[str]] = []

        def command(argv: list[str]) -> int:  # stands in for the CLI: each stage as its command line
            calls.append(argv)
            if argv[0] == "synth":
                Path(argv[1]).mkdir(parents=True, exist_ok=True)
                (Path(argv[1]) / "cohort.toml").write_text("")
            return 0

        def demo(seed: int) -> tuple[list[str], list[str]]:
            calls.clear()
            assert run_demo(tmp_path / "demo", command, breasts=60, seed=seed) == 0
            return [argv[0] for argv in calls], next(argv for argv in calls if argv[0] == "train")

        stages, train = demo(seed=0)
        assert stages[0] == "synth" and "--force" not in train
        stages, train = demo(seed=0)  # resumes: the same cohort, training goes on where it stopped
        assert stages[0] == "ingest" and "--force" not in train
        stages, train = demo(seed=1)  # another cohort: the old model must not stand for it
        assert stages[0] == "synth" and "--force" in train
        stages, train = demo(seed=1)
        assert stages[0] == "ingest" and "--force" not in train
