// A mark in front of the browser tab's title ("✗ FAILED · ...") that JupyterLab's own title
// updates do not wipe out: a MutationObserver puts it back whenever the title changes.
const MARKS: { [state: string]: string } = { FAILED: '✗ FAILED', FINISHED: '✓ FINISHED' };
const SEP = ' · ';

export class TitleMark {
  constructor() {
    const el = document.querySelector('title');
    if (el) {
      this._observer = new MutationObserver(() => this._apply());
      this._observer.observe(el, { childList: true, characterData: true, subtree: true });
    }
  }

  /** Show the mark of `state` (FAILED, FINISHED), or none (any other state, or null). */
  set(state: string | null): void {
    const mark = (state && MARKS[state]) || '';
    if (mark !== this._mark) {
      this._mark = mark;
      this._apply();
    }
  }

  private _apply(): void {
    let title = document.title;
    for (const m of Object.values(MARKS)) {
      if (title.startsWith(m + SEP)) {
        title = title.slice(m.length + SEP.length);
      }
    }
    const wanted = this._mark ? this._mark + SEP + title : title;
    if (document.title !== wanted) {
      document.title = wanted;
    }
  }

  private _mark = '';
  private _observer: MutationObserver | null = null;
}
