"""`mammofuse pretrain`: a backbone learnt from images alone, loaded like any weights file, resumable."""

import json
import shutil

import pytest
import torch

from mammofuse.cli import main
from mammofuse.config import ModelConfig, load_config
from mammofuse.models import create_backbone
from mammofuse.runs import Work
from tests.training.fixtures import as_a_gpu_writes_it

PRESET = """
[model]
backbone = "tiny_cnn"
pretrained = "none"
grey = "adapt"
"""


def pretrain(cohort, out, *extra, processes: int = 0) -> int:
    preset = cohort.parent / "ssl.toml"
    preset.write_text(PRESET + f"[train]\nnum_workers = {processes}\n")
    argv = ["pretrain", str(cohort / "cohort.toml"), "--preset", str(preset), "--out", str(out)]
    return main([*argv, "--batch-size", "32", *extra])


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a, b) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


class TestPretrain:
    def test_learns_from_the_training_images_without_labels_and_loads_as_model_pretrained(
        self, ready, tmp_path
    ):
        (ready / "labels.csv").unlink()  # never read: ingest and split are done
        (ready / "clinical.csv").unlink()
        out = tmp_path / "ssl" / "tiny.pt"
        assert pretrain(ready, out, "--epochs", "1") == 0
        card = json.loads((tmp_path / "ssl" / "tiny.pt.json").read_text())
        splits = Work(ready / "work").read_splits()
        n_train = int((splits["split"] == "train").sum())
        assert card["images"] == 2 * n_train  # both views of every training breast, nothing else
        assert card["epochs"] == 1 and card["method"].startswith("SimCLR") and len(card["images_hash"]) == 16
        assert card["views"].startswith("per image")
        assert torch.load(out, weights_only=True)["card"] == card
        torch.manual_seed(0)  # what pretrain started from
        start = create_backbone("tiny_cnn", "none", "adapt").classifier_state()
        learnt = weights(out)
        assert any(not torch.equal(learnt[k], start[k]) for k in start if k.startswith("features"))
        loaded = create_backbone("tiny_cnn", str(out), "adapt")  # the path model.pretrained takes
        assert torch.allclose(loaded.classifier_state()["features.0.weight"], learnt["features.0.weight"])
        ModelConfig(backbone="tiny_cnn", pretrained=str(out), grey="adapt")  # a valid setting

    @pytest.mark.parametrize("written_by", ["the CPU", "a GPU"])
    def test_an_interrupted_pretraining_continues_to_the_same_weights(self, ready, tmp_path, written_by):
        """Resumed on the CPU, a pretraining ends where the CPU's uninterrupted one ends, even when a GPU
        wrote its resume checkpoint (with the fused optimizer's flag)."""
        assert pretrain(ready, tmp_path / "straight.pt", "--epochs", "2") == 0
        assert pretrain(ready, tmp_path / "resumed.pt", "--epochs", "1") == 0
        resume = tmp_path / "resumed.pt.resume.ckpt"
        assert resume.is_file()
        if written_by == "a GPU":
            state = torch.load(resume, weights_only=True)
            as_a_gpu_writes_it(state["optimizer"])
            torch.save(state, resume)
        assert pretrain(ready, tmp_path / "resumed.pt", "--epochs", "2") == 0
        assert_same_weights(tmp_path / "straight.pt", tmp_path / "resumed.pt")

    def test_loader_processes_draw_the_same_views_and_resume_to_the_same_weights(self, ready, tmp_path):
        """Two loader processes (reading the next epoch ahead), stopped after one epoch and resumed, end
        with the weights of one straight run that read every image in the main process."""
        assert pretrain(ready, tmp_path / "straight.pt", "--epochs", "2") == 0
        assert pretrain(ready, tmp_path / "resumed.pt", "--epochs", "1", processes=2) == 0
        assert pretrain(ready, tmp_path / "resumed.pt", "--epochs", "2", processes=2) == 0
        assert_same_weights(tmp_path / "straight.pt", tmp_path / "resumed.pt")

    def test_a_resume_file_from_other_settings_is_not_resumed(self, ready, tmp_path, capsys):
        """A resume checkpoint whose card differs (here: written before views were drawn per image) starts
        over: the result is one straight run's, never a mix of two settings."""
        assert pretrain(ready, tmp_path / "straight.pt", "--epochs", "2") == 0
        assert pretrain(ready, tmp_path / "resumed.pt", "--epochs", "1") == 0
        resume = tmp_path / "resumed.pt.resume.ckpt"
        state = torch.load(resume, weights_only=True)
        del state["card"]["views"]
        state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}
        torch.save(state, resume)
        capsys.readouterr()
        assert pretrain(ready, tmp_path / "resumed.pt", "--epochs", "2") == 0
        assert "made with other settings" in " ".join(capsys.readouterr().out.split())  # however wrapped
        assert_same_weights(tmp_path / "straight.pt", tmp_path / "resumed.pt")

    def test_an_unlabelled_archive_folder_serves_every_mammogram_in_it(self, ready, tmp_path):
        archive = tmp_path / "archive" / "nested"
        archive.mkdir(parents=True)
        files = sorted((ready / "dicom").rglob("*.dcm"))[:40]
        for i, f in enumerate(files):
            shutil.copy(f, archive / f"{i}.dcm")
        (archive / "notes.txt").write_text("not a mammogram")
        out = tmp_path / "archive.pt"
        assert pretrain(ready, out, "--epochs", "1", "--images", str(tmp_path / "archive")) == 0
        card = json.loads((tmp_path / "archive.pt.json").read_text())
        assert card["source"].startswith("archive") and card["images"] == len(files)

    def test_cross_validation_folds_are_refused_without_an_archive(self, ready, tmp_path, capsys):
        work = Work(ready / "work")
        splits = work.read_splits()
        splits.drop(columns="split").assign(fold=range(len(splits))).to_csv(work.splits, index=False)
        assert pretrain(ready, tmp_path / "x.pt", "--epochs", "1") == 2
        assert "--images" in capsys.readouterr().out

    def test_a_crop_too_small_stops_at_once_and_one_too_large_is_the_image_as_the_card_says(
        self, ready, tmp_path, capsys
    ):
        assert pretrain(ready, tmp_path / "small.pt", "--epochs", "1", "--crop", "4", "4") == 2
        assert "--crop 4 4: at least 32x32 pixels" in capsys.readouterr().out
        assert not list(tmp_path.glob("small.pt*"))
        assert pretrain(ready, tmp_path / "large.pt", "--epochs", "1", "--crop", "5000", "5000") == 0
        shown = " ".join(capsys.readouterr().out.split())
        image = list(load_config(ready / "cohort.toml").preprocess.output_shape)
        assert json.loads((tmp_path / "large.pt.json").read_text())["crop"] == image  # was [5000, 5000]
        assert "(--crop 5000x5000 is larger than the preprocessed images" in shown
