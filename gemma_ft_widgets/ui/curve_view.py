"""The dashboard's curves and their view controls: loss (train raw and EMA-smoothed, eval; log
scale on demand), throughput (outliers clipped, smoothed), learning rate and gradient norm,
against step, tokens seen or wall time.

The view state is traits of `CurveControls` (smoothing, log_loss, x_axis), so notebooks and
kernel-side tests set it without a browser. Each line is transformed incrementally
(ui/curves.py) and decimated incrementally (plots.Decimator); a change of view state starts
both over for the lines it touches.
"""

from __future__ import annotations

import bqplot as bq
import ipywidgets as w
import numpy as np
import traitlets as t

from . import curves, layout, plots
from .series import RunSeries

RAW_OPACITY = 0.25  # the raw line behind a smoothed one, as TensorBoard draws it
X_LABELS = {"step": "step", "tokens": "tokens", "wall time": "wall time (s)"}


class CurveControls(w.HBox):
    """Smoothing slider (0 = raw), log-scale loss, x-axis. Traits: `smoothing`, `log_loss`, `x_axis`."""

    smoothing = t.Float(curves.SMOOTHING)
    log_loss = t.Bool(False)
    x_axis = t.Enum(curves.X_AXES, default_value="step")

    def __init__(self, **kwargs):
        self.slider = w.FloatSlider(value=curves.SMOOTHING, min=0.0, max=0.99, step=0.01, description="Smoothing",
                                    readout_format=".2f", continuous_update=False,
                                    tooltip="exponential moving average, as TensorBoard's slider; 0 shows the raw values",
                                    layout=w.Layout(width="300px"))
        self.slider.add_class("gft-smoothing")
        self.log_box = w.Checkbox(value=False, description="log-scale loss", indent=False,
                                  layout=w.Layout(width="130px"))
        self.log_box.add_class("gft-log-loss")
        self.x_buttons = w.ToggleButtons(options=list(curves.X_AXES), value="step", tooltips=[
            "optimizer steps", "tokens seen (from tokens/s × step time)", "seconds since the first step"],
            style={"button_width": "80px"})
        self.x_buttons.add_class("gft-x-axis")
        super().__init__([self.slider, self.log_box, self.x_buttons],
                         layout=w.Layout(flex_flow="row wrap", align_items="center", grid_gap="8px"), **kwargs)
        self.add_class("gft-curve-controls")
        w.link((self.slider, "value"), (self, "smoothing"))
        w.link((self.log_box, "value"), (self, "log_loss"))
        w.link((self.x_buttons, "value"), (self, "x_axis"))


class CurveView(w.VBox):
    """Public names: `controls`, `loss_figure`, `loss_line` (raw), `loss_smooth_line`, `eval_line`,
    `throughput_figure`, `throughput_line` (clipped), `throughput_smooth_line`, `lr_figure`,
    `lr_line`, `grad_norm_figure`, `grad_norm_line`, `grad_norm_smooth_line`;
    `throughput_now()`: the throughput the smoothed line ends at (the KPI shows it)."""

    def __init__(self, **kwargs):
        self.controls = CurveControls()
        self.loss_figure, self.loss_line, self.eval_line = plots.loss_figure()
        self.loss_smooth_line = plots.add_line(self.loss_figure, "train (smoothed)", plots.COLOURS[0])
        self._linear_y = self.loss_figure.axes[1].scale
        self._log_y = bq.LogScale()
        self.throughput_figure, self.throughput_line = plots.throughput_figure()
        self.throughput_smooth_line = plots.add_line(self.throughput_figure, "smoothed", plots.COLOURS[2])
        self.lr_figure, self.lr_line = plots.small_figure("Learning rate", "lr", "gft-lr-figure", plots.COLOURS[4],
                                                          y_format="si")
        self.grad_norm_figure, self.grad_norm_line = plots.small_figure("Gradient norm", "norm",
                                                                        "gft-grad-norm-figure", plots.COLOURS[3])
        self.grad_norm_smooth_line = plots.add_line(self.grad_norm_figure, "smoothed", plots.COLOURS[3])
        self._series: RunSeries | None = None
        self._max_points = plots.MAX_POINTS
        self._decimators: dict[int, plots.Decimator] = {}
        self._drawn: dict[int, tuple] = {}
        self._x = {name: curves.Incremental(fn, init) for name, (fn, init) in {
            "tokens": (curves.tokens_seen, (0.0, 0.0)), "wall time": (curves.wall_time, None)}.items()}
        self._clip = curves.Incremental(curves.clip_outliers, np.zeros(0))
        self._ema = {key: curves.Incremental(lambda y, s: curves.ema(y, self.controls.smoothing, s), (0.0, 0))
                     for key in ("loss", "throughput", "grad_norm")}
        self._throughput_now: float | None = None
        halves = [plots.keyed(self.lr_figure), plots.keyed(self.grad_norm_figure)]
        for box in halves:  # two side by side, or one a line when narrow; never wider than the panel
            box.layout.width, box.layout.min_width = "calc(50% - 4px)", "290px"
        halves = w.HBox(halves, layout=w.Layout(width=layout.FULL, flex_flow="row wrap"))
        super().__init__([self.controls, plots.keyed(self.loss_figure), plots.keyed(self.throughput_figure), halves],
                         **kwargs)
        self.add_class("gft-curves")
        self.controls.observe(self._view_changed, ["smoothing", "log_loss", "x_axis"])

    def _view_changed(self, change) -> None:
        if change["name"] == "log_loss":
            self._set_log(change["new"])
        label = X_LABELS[self.controls.x_axis]
        for fig in (self.loss_figure, self.throughput_figure, self.lr_figure, self.grad_norm_figure):
            if fig.axes[0].label != label:
                fig.axes[0].label = label
        self.show(self._series, self._max_points)

    def _set_log(self, log: bool) -> None:
        scale = self._log_y if log else self._linear_y
        with self.loss_figure.hold_sync():
            for line in (self.loss_line, self.loss_smooth_line, self.eval_line):
                line.scales = {"x": line.scales["x"], "y": scale}
            self.loss_figure.axes[1].scale = scale
            self.loss_figure.axes[1].tick_values = None

    @property
    def scales(self) -> tuple:
        """The loss figure's linear and log y-scales (one of them is detached at any time)."""
        return self._linear_y, self._log_y

    def throughput_now(self) -> float | None:
        """Where the drawn throughput line ends (outliers clipped, smoothed); None when nothing is drawn."""
        return self._throughput_now

    # -- drawing ----------------------------------------------------------------------------
    def show(self, series: RunSeries | None, max_points: int = plots.MAX_POINTS) -> None:
        """Draw the series' curves (None clears them), decimated to `max_points`; only what was
        appended since the last draw is processed."""
        self._series, self._max_points = series, max_points
        lines = (self.loss_line, self.loss_smooth_line, self.eval_line, self.throughput_line,
                 self.throughput_smooth_line, self.lr_line, self.grad_norm_line, self.grad_norm_smooth_line)
        if series is None:
            for line in lines:
                plots.set_line(line, [], [], max_points)
            self._drawn, self._throughput_now = {}, None
            return
        c = self.controls
        key = (series.uid, series.generation)
        view = (key, c.x_axis, c.smoothing)
        x = self._x_values(series, key)
        smooth = c.smoothing > 0
        clipped = self._clip.update(key, series.tokens_per_s.values)
        throughput = self._ema["throughput"].update(view, clipped)
        self._throughput_now = _last_finite(throughput)
        eval_x = (series.eval_step.values if c.x_axis == "step"
                  else np.interp(series.eval_step.values, series.step.values, x) if len(x) else np.zeros(0))
        curves_now = [
            (self.loss_line, x, series.loss.values, True),
            (self.loss_smooth_line, x, self._ema["loss"].update(view, series.loss.values), smooth),
            (self.eval_line, eval_x, series.eval_loss.values, True),
            (self.throughput_line, x, clipped, True),
            (self.throughput_smooth_line, x, throughput, smooth),
            (self.lr_line, x, series.lr.values, True),
            (self.grad_norm_line, x, series.grad_norm.values, True),
            (self.grad_norm_smooth_line, x, self._ema["grad_norm"].update(view, series.grad_norm.values), smooth),
        ]
        for line, xs, ys, visible in curves_now:
            if line.visible != visible:
                line.visible = visible
            raw = line in (self.loss_line, self.throughput_line, self.grad_norm_line)
            opacity = [RAW_OPACITY if raw and smooth else 1.0]
            if list(line.opacities or [1.0]) != opacity:
                line.opacities = opacity
            state = (view, len(xs), max_points)
            if self._drawn.get(id(line)) == state:
                continue
            dec = self._decimators.get(id(line))
            if dec is None or dec.max_points != max(int(max_points), 4):
                dec = self._decimators[id(line)] = plots.Decimator(max_points)
            plots.set_line(line, xs, ys, max_points, decimator=dec, key=view)
            self._drawn[id(line)] = state
        plots.fit_ticks(self.loss_figure, y_log=c.log_loss)
        plots.fit_ticks(self.throughput_figure)
        plots.fit_ticks(self.lr_figure)
        plots.fit_ticks(self.grad_norm_figure)

    def _x_values(self, series: RunSeries, key) -> np.ndarray:
        axis = self.controls.x_axis
        if axis == "tokens":
            return self._x["tokens"].update(key, series.step.values, series.tokens_per_s.values,
                                            series.step_time.values)
        if axis == "wall time":
            return self._x["wall time"].update(key, series.time.values)
        return series.step.values


def _last_finite(values: np.ndarray) -> float | None:
    """The last finite value; looks at the tail first (a refresh must not scan a long history)."""
    for part in (values[-64:], values):
        finite = part[np.isfinite(part)]
        if len(finite):
            return float(finite[-1])
    return None
