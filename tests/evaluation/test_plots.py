import pandas as pd

from mammofuse.evaluation.plots import overfitting_figure, training_figure


def epochs(n: int) -> pd.DataFrame:
    rows = [
        {
            "epoch": e,
            "train_loss": 0.6,
            "val_loss": 0.7,
            "train_acc": 0.7,
            "val_acc": 0.6,
            "train_auc": 0.8,
            "val_auc": 0.6,
        }
        for e in range(1, n + 1)
    ]
    return pd.DataFrame(rows)


def drawn(figure) -> list:
    """Every curve of the figure that shows on the page: a line of two points or more, or points."""
    figure.canvas.draw()
    return [
        line
        for ax in figure.axes
        for line in ax.lines
        if len(line.get_xdata()) > 1 or line.get_marker() not in (None, "None", "", " ")
    ]


class TestCurvesByEpoch:
    def test_a_run_of_one_epoch_is_drawn_as_points_on_whole_epochs(self):
        for figure, curves in (
            (training_figure(epochs(1)), 6),
            (overfitting_figure({"a": [epochs(1), epochs(1)], "b": [epochs(1)]}), 6 + 1),  # + the 0.5 line
        ):
            assert len(drawn(figure)) == curves  # a line of one point used to be invisible
            for ax in figure.axes:
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks)  # not 0.96, 0.98, ...

    def test_a_longer_run_is_drawn_as_lines(self):
        figure = training_figure(epochs(15))
        assert all(line.get_marker() in (None, "None", "") for ax in figure.axes for line in ax.lines)

    def test_the_apparent_auc_is_a_star_at_the_kept_epoch(self):
        figure = training_figure(epochs(15), apparent=(7, 0.93))
        stars = [line for ax in figure.axes for line in ax.lines if line.get_marker() == "*"]
        assert len(stars) == 1 and list(stars[0].get_xdata()) == [7] and list(stars[0].get_ydata()) == [0.93]
        assert "apparent AUC (kept epoch)" in [t.get_text() for t in figure.axes[1].get_legend().get_texts()]
