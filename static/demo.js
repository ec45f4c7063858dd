// The demo page: one Upload per chosen or dropped file, one row each.
// It talks to the API of the origin that served it, and nothing else (the
// page's Content-Security-Policy says the same): a link to this page must not
// be able to send someone's files elsewhere. Query parameters tune it:
// ?chunkSize=1048576&parallel=2&digest=off&token=<jwt>&processing=on
// (processing=on: after each upload, show a worker's processing reports,
// followed live; each followed upload holds a connection open, and a
// browser has 6 per origin over HTTP/1.1, so it is not the default).

import { Estimate, Upload, canRetryLater, formatBytes, formatDuration } from './tranche-upload.js';

const params = new URLSearchParams(location.search);
const options = {
  endpoint: '/api/v1',
  chunkSize: numberParam('chunkSize'),
  parallel: numberParam('parallel'),
  token: params.get('token') || undefined,
  contentDigest: params.get('digest') !== 'off',
};
const followProcessing = params.get('processing') === 'on';

/** Whether the same file can get past this failure if tried again (docs/API.md's retry table). */
const retryHelps = (err) => canRetryLater(err?.status ?? 0, err?.code);
const FINISHED = ['completed', 'failed', 'aborted'];

const list = document.getElementById('uploads');
const template = document.getElementById('upload-template');
const input = document.getElementById('file-input');
const zone = document.getElementById('drop-zone');
const announcer = document.getElementById('announcer');

/** Rows of uploads still running, by file, so the same file is not sent twice at once. */
const active = new Map();

document.getElementById('endpoint-hint').textContent = `Sending to ${new URL(options.endpoint, location.href).href}`;

input.addEventListener('change', () => {
  addFiles(input.files);
  // The same file can be chosen again (to resume it after a cancel or an error).
  input.value = '';
});

for (const type of ['dragenter', 'dragover']) {
  zone.addEventListener(type, (e) => {
    e.preventDefault();
    zone.classList.add('dragging');
  });
}
for (const type of ['dragleave', 'drop']) {
  zone.addEventListener(type, () => zone.classList.remove('dragging'));
}
zone.addEventListener('drop', (e) => {
  e.preventDefault();
  addFiles(e.dataTransfer.files);
});

function addFiles(files) {
  for (const file of files) {
    const key = `${file.name}|${file.size}|${file.lastModified}`;
    const running = active.get(key);
    if (running) {
      // Already on its way in another row: show that row rather than start a
      // second upload that would race the first for the same chunks.
      flash(running);
      continue;
    }
    // The row holds the file's place while it runs, gives it up when it
    // finishes, and takes it again for a Retry (unless another row has it).
    const place = {
      take(row) {
        const other = active.get(key);
        if (other && other !== row) {
          flash(other);
          return false;
        }
        active.set(key, row);
        return true;
      },
      release(row) {
        if (active.get(key) === row) active.delete(key);
      },
    };
    place.take(addRow(file, place));
  }
}

function flash(row) {
  row.scrollIntoView({ block: 'nearest' });
  row.classList.remove('flash');
  // Restart the animation: reading a layout property flushes the removal.
  void row.offsetWidth;
  row.classList.add('flash');
  row.focus();
  announce(row.querySelector('.name').textContent, 'already uploading, see its row.');
}

/** A server message ends without a full stop; the demo's sentences follow it. */
function sentence(text) {
  return /[.!?…]$/.test(text) ? text : `${text}.`;
}

function addRow(file, place) {
  const row = template.content.firstElementChild.cloneNode(true);
  const $ = (sel) => row.querySelector(sel);
  const bar = $('.bar');
  const pause = $('.pause');
  const cancel = $('.cancel');
  const retry = $('.retry');
  const dismiss = $('.dismiss');
  const link = $('.link');
  const copy = $('.copy');
  const status = $('.status');
  const warnings = $('.warnings');
  const processing = $('.processing');
  const estimate = new Estimate();
  $('.name').textContent = file.name;
  $('.size').textContent = formatBytes(file.size);
  row.setAttribute('aria-label', file.name);
  bar.setAttribute('aria-label', `Upload of ${file.name}`);
  // Several rows have the same buttons: a screen reader's list of buttons
  // must say which file each is for.
  pause.setAttribute('aria-label', `Pause ${file.name}`);
  cancel.setAttribute('aria-label', `Cancel ${file.name}`);
  retry.setAttribute('aria-label', `Retry ${file.name}`);
  dismiss.setAttribute('aria-label', `Dismiss ${file.name}`);
  link.setAttribute('aria-label', `Download ${file.name}`);
  copy.setAttribute('aria-label', `Copy the link to ${file.name}`);
  list.prepend(row);

  const say = (text, { announced = false } = {}) => {
    status.textContent = text;
    if (announced) announce(file.name, text);
  };

  const upload = new Upload(file, {
    ...options,
    onProgress(acked, total, p) {
      // Two shades: what the server has saved, and beyond it what is on its
      // way (lost if the tab closes now). The percentage is what is saved:
      // one decimal, rounded down, 100 only when every byte is confirmed.
      const confirmed = total === 0 ? p.savedFraction === 1 : acked === total;
      const percent = confirmed ? 100 : Math.min(99.9, Math.floor(p.savedFraction * 1000) / 10);
      const sending = total === 0 ? 0 : Math.min(1, (acked + p.bytesInFlight) / total);
      bar.style.setProperty('--saved', percent / 100);
      bar.style.setProperty('--fraction', confirmed ? 1 : sending);
      bar.setAttribute('aria-valuenow', String(percent));
      const moving = p.bytesInFlight > 0 ? `, ${formatBytes(p.bytesInFlight)} more on its way` : '';
      bar.setAttribute('aria-valuetext', `${percent} % saved: ${formatBytes(acked)} of ${formatBytes(total)}${moving}`);
      $('.percent').textContent = confirmed ? '100 %' : `${percent} % saved`;
      if (upload.state === 'uploading') {
        // Nothing until the figures mean something (see Estimate), then smoothed.
        const shown = estimate.update(p.speed, total - p.bytesShown);
        $('.speed').textContent = shown.speed != null ? `${formatBytes(shown.speed)}/s` : '';
        $('.eta').textContent = shown.eta != null ? `${formatDuration(shown.eta)} left` : '';
      }
    },
    onWarnings(list) {
      warnings.textContent = list.map((w) => `The server warns: ${sentence(w)}`).join(' ');
      warnings.hidden = false;
    },
    onRetry({ delay, error }) {
      say(`${sentence(error.message)} Trying again in ${formatDuration(delay / 1000)}…`);
    },
    onStateChange(state) {
      const hadFocus = row.contains(document.activeElement) ? document.activeElement : null;
      row.dataset.state = state;
      const running = !FINISHED.includes(state);
      pause.textContent = state === 'paused' ? 'Resume' : 'Pause';
      pause.setAttribute('aria-label', `${pause.textContent} ${file.name}`);
      pause.hidden = !running;
      pause.disabled = state === 'idle';
      cancel.hidden = !running;
      retry.hidden = state !== 'failed' || !retryHelps(upload.error);
      dismiss.hidden = running;
      if (state !== 'uploading') {
        $('.speed').textContent = '';
        $('.eta').textContent = '';
      }
      // Each (re)start measures afresh.
      estimate.restart();
      if (running) {
        status.classList.remove('error');
      } else {
        place.release(row);
      }
      const messages = {
        starting: 'Starting…',
        uploading: !upload.resumed
          ? 'Uploading…'
          : upload.progress.acked > 0
            ? `Uploading (continuing an earlier upload: ${formatBytes(upload.progress.acked)} already saved)…`
            : 'Uploading from the start: the earlier upload had nothing saved on the server yet…',
        paused: 'Paused.',
        completing: 'Checking the file…',
        aborted: 'Cancelled.',
      };
      if (messages[state]) say(messages[state], { announced: ['paused', 'aborted'].includes(state) });
      // A button that just disappeared under the keyboard's focus would drop
      // focus to the page's start: keep it in this row.
      // (After the callbacks that follow this one, which may show a link.)
      if (hadFocus) queueMicrotask(() => (hadFocus.hidden || hadFocus.disabled) && focusInRow(row));
    },
    onSuccess(result) {
      row.dataset.uploadId = upload.id;
      // With authentication on, a link carries the upload's own token (it
      // covers this one upload only): a browser following a link sends no header.
      if (result.url) {
        link.href = upload.token ? `${result.url}?access_token=${encodeURIComponent(upload.token)}` : result.url;
        link.hidden = false;
        // The file's URL, absolute, for a chat or a ticket.
        copy.dataset.url = link.href;
        copy.hidden = false;
      }
      say(`Done. SHA-256 ${result.sha256}`, { announced: true });
    },
    onProcessing: followProcessing
      ? (report) => {
          row.dataset.processing = report.state;
          processing.textContent = processingText(report);
          processing.classList.toggle('error', report.state === 'failed');
          processing.hidden = false;
        }
      : undefined,
    onError(err) {
      const hint = retryHelps(err) ? ' Retry, or choose the file again later, to continue.' : '';
      say(`Failed: ${err.message} (${err.code}).${hint}`, { announced: true });
      status.classList.add('error');
    },
  });

  pause.addEventListener('click', () => (upload.state === 'paused' ? upload.resume() : upload.pause()));
  cancel.addEventListener('click', () => upload.abort());
  copy.addEventListener('click', async () => {
    const url = copy.dataset.url;
    try {
      await navigator.clipboard.writeText(url);
      copy.textContent = 'Copied';
    } catch {
      // No clipboard (permission refused, no secure context): show the URL
      // selected, for the person to copy.
      window.prompt('Copy the link:', url);
    }
    announce(file.name, 'link copied.');
  });
  retry.addEventListener('click', () => {
    // Another row may have started the same file since this one failed.
    if (!place.take(row)) return;
    // The row shows the retry's outcome; the promise is not needed here.
    upload.resume();
    pause.focus();
  });
  dismiss.addEventListener('click', () => {
    upload.destroy();
    const next = row.nextElementSibling ?? row.previousElementSibling;
    row.remove();
    if (next) focusInRow(next);
    else document.getElementById('file-input').focus();
  });
  row.upload = upload;
  upload.start();
  return row;
}

/** A worker's report as a line under the bar. */
function processingText({ state, progress, message }) {
  const detail = message ? `: ${sentence(message)}` : '.';
  switch (state) {
    case 'queued':
      return `Queued for processing${detail}`;
    case 'processing':
      return `Processing${progress != null ? ` ${Math.floor(progress * 100)} %` : ''}${detail}`;
    case 'completed':
      return `Processed${detail}`;
    default:
      return `Processing failed${detail}`;
  }
}

/** The row's first visible, enabled control, else the row itself. */
function focusInRow(row) {
  const target = [...row.querySelectorAll('.actions .button')].find((el) => !el.hidden && !el.disabled);
  (target ?? row).focus();
}

// One live region for the page. The first message is said at once; what
// follows within a moment is collected, so that fifty files finishing
// together become one summary instead of fifty sentences read in a row.
const QUIET_MS = 1000;
let pending = [];
let quietTimer = null;
function announce(name, text) {
  if (quietTimer == null) {
    announcer.textContent = `${name}: ${text}`;
    quietTimer = setTimeout(flushAnnouncements, QUIET_MS);
  } else {
    pending.push({ name, text });
  }
}

function flushAnnouncements() {
  const batch = pending;
  pending = [];
  if (batch.length === 0) {
    quietTimer = null;
    return;
  }
  if (batch.length === 1) {
    announcer.textContent = `${batch[0].name}: ${batch[0].text}`;
  } else {
    const counts = new Map();
    for (const { text } of batch) {
      const kind = /^Done/.test(text) ? 'completed' : /^Failed/.test(text) ? 'failed' : /^Cancelled/.test(text) ? 'cancelled' : 'changed';
      counts.set(kind, (counts.get(kind) ?? 0) + 1);
    }
    announcer.textContent = `${[...counts].map(([kind, n]) => `${n} more uploads ${kind}`).join(', ')}.`;
  }
  quietTimer = setTimeout(flushAnnouncements, QUIET_MS);
}

/** A number from the query string; anything else means the default. */
function numberParam(name) {
  const v = Number(params.get(name) || NaN);
  return Number.isFinite(v) ? v : undefined;
}
