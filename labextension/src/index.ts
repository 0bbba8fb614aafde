// gemma-ft-widgets: the active fine-tuning run in JupyterLab's shell.
//
// One poll of GET /gemma-ft/api/workspaces feeds a status-bar item, toasts (Notification API)
// when a run finishes, fails, stops, is orphaned or stalls, and a mark in the tab title for a
// failed or finished run. The wording of each notice comes from the server
// (gemma_ft_widgets/notices.py), the same the widget panel shows in Colab or VS Code.
// "Gemma fine-tuning panel" (palette, launcher, a click on the status item) opens a notebook
// whose first cell shows the panel.
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Poll } from '@lumino/polling';

import { INotice, IWorkspace, workspaces } from './api';
import { pick, RunStatusItem } from './statusitem';
import { TitleMark } from './title';

const OPEN_PANEL = 'gemma-ft:open-panel';
const DESKTOP_NOTIFICATIONS = 'gemma-ft:desktop-notifications';
const PANEL_NOTEBOOK = 'gemma_ft_panel.ipynb';
const ACTIVE_MS = 5000; // a run is active: its step moves
const IDLE_MS = 15000; // nothing runs: a new run shows up within this
const HIDDEN_MS = 60000; // a hidden tab still hears of an ending (a desktop notification), slowly
const MAX_BACKOFF_MS = 30000; // the server is away (restart): try again at most this far apart

function panelNotebook(workspace: string | null): object {
  // JSON.stringify of a path is a valid Python string literal.
  const arg = workspace ? `workspace=${JSON.stringify(workspace)}` : '';
  return {
    cells: [
      {
        cell_type: 'markdown',
        metadata: {},
        source: '# Gemma fine-tuning\nRun the cell below (Shift+Enter) to show the control panel.'
      },
      {
        cell_type: 'code',
        execution_count: null,
        metadata: {},
        outputs: [],
        source: `from gemma_ft_widgets import ControlPanel\n\nControlPanel(${arg})`
      }
    ],
    metadata: {
      kernelspec: { display_name: 'Python 3 (ipykernel)', language: 'python', name: 'python3' },
      language_info: { name: 'python' }
    },
    nbformat: 4,
    nbformat_minor: 5
  };
}

class Watcher {
  constructor(
    private app: JupyterFrontEnd,
    private item: RunStatusItem | null
  ) {
    this.poll = new Poll({
      name: 'gemma-ft:workspaces',
      factory: () => this.tick(),
      frequency: { interval: IDLE_MS, backoff: true, max: MAX_BACKOFF_MS }
    });
    // Back in view: ask now rather than at the end of a hidden tab's long interval.
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        void this.poll.refresh();
      }
    });
  }

  workspace(): string | null {
    const found = pick(this.spaces);
    return found ? found.space.path : this.spaces.length ? this.spaces[0].path : null;
  }

  clearTitle(): void {
    this.titleState = null;
    this.title.set(null);
  }

  private async tick(): Promise<void> {
    let spaces: IWorkspace[];
    try {
      spaces = await workspaces();
    } catch (error) {
      this.item?.render(this.spaces, true);
      throw error; // the poll backs off
    }
    this.spaces = spaces;
    this.item?.render(spaces, false);
    const found = pick(spaces);
    const active = found !== null && found.run.active;
    if (active) {
      this.titleState = null; // a new run: the old outcome is news no more
    }
    for (const space of spaces) {
      this.announce(space.notice);
    }
    this.title.set(this.titleState);
    this.baseline = false;
    const interval = document.hidden ? HIDDEN_MS : active ? ACTIVE_MS : IDLE_MS;
    if (this.poll.frequency.interval !== interval) {
      this.poll.frequency = { ...this.poll.frequency, interval, max: Math.max(MAX_BACKOFF_MS, interval) };
    }
  }

  /** A notice is shown once, and only if it appeared while this page watched. */
  private announce(notice: INotice | null): void {
    if (!notice || this.seen.has(notice.key)) {
      return;
    }
    this.seen.add(notice.key);
    if (this.baseline) {
      return;
    }
    const what = notice.key.slice(notice.key.lastIndexOf(':') + 1);
    if (what === 'FAILED' || what === 'FINISHED') {
      this.titleState = what; // the tab title says so until a new run starts or the panel opens
    }
    Notification.emit(`${notice.title}: ${notice.text}`, notice.level, {
      autoClose: notice.level === 'error' || notice.level === 'warning' ? false : 15000,
      actions: [
        {
          label: 'Open panel',
          callback: () => void this.app.commands.execute(OPEN_PANEL)
        }
      ]
    });
    if (document.hidden && 'Notification' in window && window.Notification.permission === 'granted') {
      new window.Notification(notice.title, { body: notice.text });
    }
  }

  readonly poll: Poll;
  private spaces: IWorkspace[] = [];
  private seen = new Set<string>();
  private baseline = true;
  private titleState: string | null = null;
  private title = new TitleMark();
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'gemma-ft-widgets:plugin',
  description: 'The active Gemma fine-tuning run in the status bar, toasts, and a launcher entry.',
  autoStart: true,
  optional: [IStatusBar, ICommandPalette, ILauncher],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    launcher: ILauncher | null
  ) => {
    const item = statusBar ? new RunStatusItem(() => void app.commands.execute(OPEN_PANEL)) : null;
    const watcher = new Watcher(app, item);

    app.commands.addCommand(OPEN_PANEL, {
      label: 'Gemma fine-tuning panel',
      caption: 'Open a notebook with the Gemma fine-tuning control panel',
      execute: async () => {
        watcher.clearTitle();
        const contents = app.serviceManager.contents;
        // A listing, not a GET of the file: a 404 would be logged as a console error.
        const root = await contents.get('', { content: true });
        const exists = (root.content as { name: string }[]).some(m => m.name === PANEL_NOTEBOOK);
        if (!exists) {
          await contents.save(PANEL_NOTEBOOK, {
            type: 'notebook',
            format: 'json',
            content: panelNotebook(watcher.workspace())
          });
        }
        return app.commands.execute('docmanager:open', { path: PANEL_NOTEBOOK, factory: 'Notebook' });
      }
    });
    app.commands.addCommand(DESKTOP_NOTIFICATIONS, {
      label: 'Gemma fine-tuning: desktop notifications when this tab is hidden',
      isEnabled: () => 'Notification' in window && window.Notification.permission !== 'granted',
      execute: async () => {
        await window.Notification.requestPermission();
      }
    });
    palette?.addItem({ command: OPEN_PANEL, category: 'Gemma fine-tuning' });
    palette?.addItem({ command: DESKTOP_NOTIFICATIONS, category: 'Gemma fine-tuning' });
    launcher?.add({ command: OPEN_PANEL, category: 'Notebook', rank: 50 });
    if (item && statusBar) {
      statusBar.registerStatusItem('gemma-ft-widgets:status', {
        item,
        align: 'left',
        rank: 50,
        isActive: () => item.hasRun,
        activeStateChanged: item.activeStateChanged
      });
    }
    void watcher.poll.start();
  }
};

export default plugin;
