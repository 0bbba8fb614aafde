"""The notebook control panel: `ControlPanel(workspace=None)`.

    from gemma_ft_widgets.ui import ControlPanel
    panel = ControlPanel("gemma_ft_runs")     # display it: last expression of a cell
    panel.close()                             # stops its poller thread

Building it never imports jax. Names that notebooks, tests and the browser tests rely on
(CSS classes in brackets, for Playwright selectors):

ControlPanel
    traits: state (state of the run shown; "IDLE" with the form), view ("loading" until
    the first poll, then "form" | "dashboard" | "finished" | "failed" | "orphaned"),
    run_dir, run_name, active_run, poll_interval (s). With poll=True the first poll runs in
    the thread (wait_ready() waits for it); with poll=False it runs in the constructor.
    Methods: refresh() (one synchronous poll), close(), wait_ready(), wait_actions(),
    note(); properties paused (all views gone: polling skipped), polls; attributes manager, workspace, messages, polling, closed, message_log [gft-panel-log],
    active_label [gft-active-run], title [gft-title], body [gft-body], scroller
    (ScrollToView: a switch of view scrolls the new one into sight) [gft-scroll-to-view],
    run_view [gft-run-view], sections (Accordion:
    0 = runs, 1 = playground, 2 = queue) [gft-sections]. The panel itself [gft-panel].
    controller (PanelController, ui/controller.py: navigation, one snapshot of the workspace
    per poll, worker threads, caches; no widgets), actions (PanelActions, ui/panel_actions.py:
    the buttons' handlers). How each State looks (view, badge, bar, buttons): ui/state_table.py.
panel.form (ConfigForm) [gft-form]
    fields[name] (one widget per TrainingConfig field; whole numbers are WholeNumberText,
    which keeps a typed "1.5" and lets the form refuse it) [gft-field-<name>],
    errors[name] (HTML next to the field: errors, or warnings [gft-field-warning] such as
    a very high learning rate, ui/advice.py) [gft-error-<name>], upload (FileUpload, copies
    into <workspace>/uploads/) [gft-upload], detected [gft-detected-format], preview
    (.summary [gft-preview-summary], .table [gft-preview-rows], .histogram
    [gft-token-histogram], .bars, .cut_line, .truncation [gft-truncation], .lengths,
    .tokenizer_label) [gft-preview], estimate_line [gft-estimate], general_errors
    [gft-general-errors], start_button [gft-start], back_button [gft-back], message
    [gft-form-message] (outcome of Start), blocked_note [gft-start-blocked] (a run is active); traits valid, active_run, busy; values(), set_values(), validate().
panel.dashboard (Dashboard) [gft-dashboard]
    badge [gft-state-badge], run_label [gft-run-name], phase [gft-phase], progress
    (IntProgress) [gft-progress], progress_label [gft-progress-label], kpis[name]
    [gft-kpi-<name with dashes>] for loss, eval_loss, lr, tokens_per_s, eta, elapsed,
    device_mem, host_mem (kpi(name) gives the text shown), loss_figure [gft-loss-figure],
    loss_line, eval_line (bqplot Lines), throughput_figure [gft-throughput-figure],
    throughput_line (outliers clipped; the tokens_per_s KPI is where its smoothed line ends),
    each figure's key above it [gft-figure-key],
    curves (CurveView) [gft-curves]: controls [gft-curve-controls] with traits smoothing
    (slider [gft-smoothing], TensorBoard's EMA; the raw lines faint behind), log_loss
    [gft-log-loss], x_axis (step / tokens / wall time) [gft-x-axis]; loss_smooth_line,
    throughput_smooth_line, lr_figure [gft-lr-figure] lr_line, grad_norm_figure
    [gft-grad-norm-figure] grad_norm_line, grad_norm_smooth_line,
    transitions (newest first, local time) [gft-transitions], log_stream (stdout/stderr/supervisor)
    [gft-log-stream], logs [gft-logs], controls [gft-controls], abort_button [gft-abort],
    confirm_button [gft-confirm], cancel_button [gft-cancel], stopping_label
    [gft-stopping], force_button [gft-force], message [gft-dashboard-message];
    trait confirming.
panel.toast (ToastBanner) [gft-toast]
    the JupyterLab extension's toasts inside the panel (Colab, Kaggle, VS Code): text
    [gft-toast-text], close_button [gft-toast-close], notice (dict or None).
panel.outcome (OutcomeView) [gft-outcome-view]
    banner [gft-outcome], stderr_tail [gft-stderr-tail], resume_button [gft-resume],
    new_run_button [gft-new-run], playground_button [gft-open-playground], clean_button
    [gft-clean].
panel.history (RunTable, ui/run_table.py) [gft-history-view]
    the run table: model (RunTableModel: traits sort_key, descending, text_filter,
    state_filter, page, page_size, selected, confirming_delete; rows, page_rows, row(dir),
    sort_by(key), set_note(), diff()), filter_text [gft-run-filter], state_pick
    [gft-run-state-filter], sort_buttons[key] [gft-sort-<key>], row_widgets (.check, .cells,
    .run_dir) [gft-run-row], count_label [gft-run-count], show_current_button
    [gft-show-current], note_text [gft-run-note], save_note_button [gft-save-note],
    csv_button [gft-csv], csv_html [gft-csv-output], delete_button [gft-delete-run],
    confirm_delete_button [gft-delete-confirm], cancel_delete_button [gft-delete-cancel],
    message [gft-run-table-message], overlay_figure [gft-overlay-figure], overlay_lines,
    diff_html [gft-config-diff]; selected.
panel.playground (Playground) [gft-playground]
    run_label [gft-playground-run], checkpoint [gft-checkpoint], history [gft-chat-history],
    prompt [gft-prompt], temperature [gft-temperature], top_p [gft-top-p], top_k [gft-top-k],
    seed [gft-seed], chat [gft-chat], compare [gft-compare], clear_button [gft-clear-chat],
    max_new_tokens [gft-max-new-tokens], generate_button [gft-generate], progress
    [gft-sample-progress], output (Textarea, the fine-tuned answer) [gft-output], base_output
    [gft-base-output] in base_box; traits run_dir, busy; turns (the conversation).
panel.samplers (runs.warm_sampler.WarmSamplers): the playground's warm sampling processes,
    closed with the panel.
"""

from .panel import ControlPanel

__all__ = ["ControlPanel"]
