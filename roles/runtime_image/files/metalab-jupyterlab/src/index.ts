/**
 * metalab: where she stands, inside JupyterLab. A status bar item shows her home usage and quota, the time left to
 * her runtime and her daily budget left (refreshed every 30 s from GET <base_url>metalab/status, counting down in
 * between), and each new warning of the guard before a stop appears once as a JupyterLab notification.
 * Sizes and durations are written like the portal writes them.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

interface IHome {
  used_bytes: number;
  limit_bytes: number;
  measured_at: string | null;
}

interface IWarning {
  message: string;
  at: string;
}

interface IStatus {
  session: number;
  kind: string;
  deadline: string;
  stop_reason: string;
  time_left_seconds: number;
  budget_left_seconds: number | null;
  home: IHome | null;
  warning: IWarning | null;
  updated: string;
  served: string;
}

const REFRESH_MS = 30000;
const SOON_SECONDS = 15 * 60;
const SHOWN_KEY = 'metalab-jupyterlab-status:warning-shown';

/** Like the portal's sizes: 512 B, 120.5 MiB, 1.0 GiB. */
export function formatBytes(n: number): string {
  let size = n;
  for (const unit of ['B', 'KiB', 'MiB', 'GiB', 'TiB']) {
    if (size < 1024 || unit === 'TiB') {
      return unit === 'B' ? `${size.toFixed(0)} B` : `${size.toFixed(1)} ${unit}`;
    }
    size /= 1024;
  }
  return `${n} B`;
}

/** Like the portal's durations: 3h12m, or 4m59s under an hour. */
export function formatSeconds(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const secs = s % 60;
  const pad = (v: number) => String(v).padStart(2, '0');
  return hours ? `${hours}h${pad(minutes)}m` : `${minutes}m${pad(secs)}s`;
}

class StatusItem extends Widget {
  private status: IStatus | null = null;
  private elapsedAtFetch = 0;
  private fetchedAt = 0;

  constructor(private readonly url: string, private readonly settings: ServerConnection.ISettings) {
    super();
    this.id = 'metalab-status';
    this.addClass('metalab-StatusItem');
    this.node.textContent = 'metalab: …';
  }

  async refresh(): Promise<void> {
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(this.url, { cache: 'no-store' }, this.settings);
    } catch (reason) {
      this.render(null, 'metalab: status unavailable');
      return;
    }
    if (!response.ok) {
      this.render(null, response.status === 404 ? 'metalab: no status yet' : 'metalab: status unavailable');
      return;
    }
    const status = (await response.json()) as IStatus;
    // Seconds between the guard's write and the server's answer, by the server's clock (not the browser's).
    this.elapsedAtFetch = Math.max(0, (Date.parse(status.served) - Date.parse(status.updated)) / 1000) || 0;
    this.fetchedAt = Date.now();
    this.render(status, '');
    this.notify(status.session, status.warning);
  }

  /** The text now: the time and budget counted down since the guard wrote them. */
  tick(): void {
    const status = this.status;
    if (status === null) {
      return;
    }
    const elapsed = this.elapsedAtFetch + (Date.now() - this.fetchedAt) / 1000;
    const left = Math.max(0, status.time_left_seconds - elapsed);
    const parts: string[] = [];
    const home = status.home;
    if (home) {
      parts.push(
        home.limit_bytes > 0
          ? `Home ${formatBytes(home.used_bytes)} / ${formatBytes(home.limit_bytes)}`
          : `Home ${formatBytes(home.used_bytes)}`
      );
    }
    parts.push(`${formatSeconds(left)} left`);
    if (status.budget_left_seconds !== null) {
      parts.push(`budget ${formatSeconds(Math.max(0, status.budget_left_seconds - elapsed))}`);
    }
    this.node.textContent = parts.join(' · ');
    this.node.dataset.timeLeft = String(Math.floor(left));
    this.node.title =
      `Your ${status.kind} runtime stops at ${status.deadline} ` +
      `(${status.stop_reason === 'limit' ? 'session limit' : 'daily budget'}).` +
      (home && home.measured_at ? ` Home measured at ${home.measured_at}.` : '');
    this.toggleClass('metalab-mod-soon', left < SOON_SECONDS);
  }

  private render(status: IStatus | null, text: string): void {
    this.status = status;
    if (status === null) {
      this.node.textContent = text;
      this.node.title = '';
      delete this.node.dataset.timeLeft;
      this.removeClass('metalab-mod-soon');
    } else {
      this.tick();
    }
  }

  /** Each warning once: remembered by session and time in this browser, so a reload does not repeat it. */
  private notify(session: number, warning: IWarning | null): void {
    if (!warning) {
      return;
    }
    const key = `${session}@${warning.at}`;
    let shown: string | null = null;
    try {
      shown = window.localStorage.getItem(SHOWN_KEY);
      window.localStorage.setItem(SHOWN_KEY, key);
    } catch (reason) {
      shown = null; // no storage: the in-page memory below still keeps it to once per page
    }
    if (shown === key || this.lastShown === key) {
      return;
    }
    this.lastShown = key;
    Notification.warning(warning.message, { autoClose: false });
  }

  private lastShown = '';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'metalab-jupyterlab-status:plugin',
  description: 'metalab: home usage, time left, budget left and the guard warnings in JupyterLab',
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    const settings = app.serviceManager.serverSettings;
    const item = new StatusItem(URLExt.join(settings.baseUrl, 'metalab', 'status'), settings);
    if (statusBar) {
      statusBar.registerStatusItem('metalab-jupyterlab-status:item', { item, align: 'left', rank: 1000 });
    }
    void item.refresh();
    window.setInterval(() => void item.refresh(), REFRESH_MS);
    window.setInterval(() => item.tick(), 1000);
  }
};

export default plugin;
