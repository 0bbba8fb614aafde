// The server extension's routes (gemma_ft_widgets/server/handlers.py), through Jupyter's own
// ServerConnection: it adds the token and the XSRF header, like every JupyterLab request.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IRunSummary {
  name: string;
  state: string;
  reason: string;
  active: boolean;
  attempt: number | null;
  step: number | null;
  max_steps: number | null;
  loss: number | null;
  eta_s: number | null;
  idle_s: number | null;
  stalled: boolean;
}

export interface INotice {
  key: string;
  level: 'success' | 'error' | 'warning' | 'info';
  title: string;
  text: string;
}

export interface IWorkspace {
  index: number;
  path: string;
  exists: boolean;
  run: IRunSummary | null;
  notice: INotice | null;
  error: string | null;
}

const settings = ServerConnection.makeSettings();

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'gemma-ft', 'api', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    try {
      message = JSON.parse(text).message || text;
    } catch {
      // not JSON: keep the text
    }
    throw new ServerConnection.ResponseError(response, message);
  }
  return JSON.parse(text) as T;
}

export async function workspaces(): Promise<IWorkspace[]> {
  return (await request<{ workspaces: IWorkspace[] }>('workspaces')).workspaces;
}
