// The status-bar item: state badge, step/total, loss, ETA of the run that matters most.
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { IRunSummary, IWorkspace } from './api';

export function duration(seconds: number | null): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '-';
  }
  const s = Math.round(seconds);
  if (s < 90) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.round(s / 60)} min`;
  }
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** The run to show: an active one first, else the first workspace's newest run. */
export function pick(spaces: IWorkspace[]): { space: IWorkspace; run: IRunSummary } | null {
  const withRun = spaces.filter(s => s.run !== null);
  const chosen = withRun.find(s => s.run!.active) || withRun[0];
  return chosen ? { space: chosen, run: chosen.run! } : null;
}

export class RunStatusItem extends Widget {
  constructor(onClick: () => void) {
    super();
    this.addClass('gft-lab-status');
    this.node.title = 'Gemma fine-tuning: click to open the panel';
    this.node.addEventListener('click', onClick);
    this._badge = document.createElement('span');
    this._badge.className = 'gft-lab-badge';
    this._text = document.createElement('span');
    this._text.className = 'gft-lab-text';
    this.node.append(this._badge, this._text);
  }

  /** The status bar shows the item only while there is a run to show (see index.ts). */
  get hasRun(): boolean {
    return this._hasRun;
  }

  readonly activeStateChanged = new Signal<this, void>(this);

  private _setHasRun(value: boolean): void {
    if (value !== this._hasRun) {
      this._hasRun = value;
      this.activeStateChanged.emit();
    }
  }

  render(spaces: IWorkspace[], offline: boolean): void {
    const found = pick(spaces);
    if (!found) {
      this._setHasRun(false);
      return;
    }
    const { space, run } = found;
    const state = run.stalled ? 'STALLED' : run.state;
    this._badge.textContent = state;
    this._badge.dataset.state = state;
    const parts = [`step ${run.step ?? '-'}/${run.max_steps ?? '-'}`];
    if (run.loss !== null && run.loss !== undefined) {
      parts.push(`loss ${run.loss.toFixed(4)}`);
    }
    if (run.active && run.eta_s !== null) {
      parts.push(`ETA ${duration(run.eta_s)}`);
    }
    if (offline) {
      parts.push('(server unreachable)');
    }
    this._text.textContent = parts.join(' · ');
    this.node.dataset.run = run.name;
    this.node.title =
      `Gemma fine-tuning: ${run.name} ${run.state}` +
      (run.reason ? ` (${run.reason})` : '') +
      `\nworkspace ${space.path}\nclick to open the panel`;
    this.toggleClass('gft-lab-offline', offline);
    this._setHasRun(true);
  }

  private _badge: HTMLElement;
  private _text: HTMLElement;
  private _hasRun = false;
}
