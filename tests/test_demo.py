import json

from mammofuse.cli import main


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
