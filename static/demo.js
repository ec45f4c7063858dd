// The demo page: one Upload per chosen or dropped file, one row each.
// Query parameters let a page (or a test) point it elsewhere:
// ?endpoint=https://uploads.example.com/api/v1&chunkSize=1048576&parallel=2&digest=off&token=...

import { Upload, formatBytes, formatDuration } from './tranche-upload.js';

const params = new URLSearchParams(location.search);
const options = {
  endpoint: params.get('endpoint') ?? '/api/v1',
  chunkSize: numberParam('chunkSize'),
  parallel: numberParam('parallel') ?? 4,
  token: params.get('token') ?? undefined,
  contentDigest: params.get('digest') !== 'off',
};

const list = document.getElementById('uploads');
const template = document.getElementById('upload-template');
const input = document.getElementById('file-input');
const zone = document.getElementById('drop-zone');
const announcer = document.getElementById('announcer');

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
  for (const file of files) addRow(file);
}

function addRow(file) {
  const row = template.content.firstElementChild.cloneNode(true);
  const $ = (sel) => row.querySelector(sel);
  const bar = $('.bar');
  const pause = $('.pause');
  const cancel = $('.cancel');
  const link = $('.link');
  const status = $('.status');
  $('.name').textContent = file.name;
  $('.size').textContent = formatBytes(file.size);
  bar.setAttribute('aria-label', `Upload of ${file.name}`);
  list.prepend(row);

  const say = (text, { announce = false } = {}) => {
    status.textContent = text;
    if (announce) announcer.textContent = `${file.name}: ${text}`;
  };

  const upload = new Upload(file, {
    ...options,
    onProgress(acked, total, p) {
      // One decimal, rounded down: the bar shows 100 only when every byte is confirmed.
      const percent = Math.floor(p.fraction * 1000) / 10;
      bar.style.setProperty('--fraction', p.fraction);
      bar.setAttribute('aria-valuenow', String(percent));
      bar.setAttribute('aria-valuetext', `${percent} %, ${formatBytes(acked)} of ${formatBytes(total)} confirmed`);
      $('.percent').textContent = `${percent} %`;
      if (upload.state === 'uploading') {
        $('.speed').textContent = p.speed > 0 ? `${formatBytes(p.speed)}/s` : '';
        $('.eta').textContent = p.eta != null ? `${formatDuration(p.eta)} left` : '';
      }
    },
    onRetry({ delay, error }) {
      say(`${error.message} Trying again in ${formatDuration(delay / 1000)}…`);
    },
    onStateChange(state) {
      row.dataset.state = state;
      pause.textContent = state === 'paused' ? 'Resume' : 'Pause';
      pause.disabled = !['starting', 'uploading', 'paused', 'completing'].includes(state);
      cancel.disabled = ['completed', 'aborted', 'failed'].includes(state);
      if (state !== 'uploading') {
        $('.speed').textContent = '';
        $('.eta').textContent = '';
      }
      const messages = {
        starting: 'Starting…',
        uploading: upload.resumed ? 'Uploading (continuing an earlier upload)…' : 'Uploading…',
        paused: 'Paused.',
        completing: 'Checking the file…',
        aborted: 'Cancelled.',
      };
      if (messages[state]) say(messages[state], { announce: ['paused', 'aborted'].includes(state) });
    },
    onSuccess(result) {
      row.dataset.uploadId = upload.id;
      // With authentication on, a link carries the upload's own token (it
      // covers this one upload only): a browser following a link sends no header.
      link.href = upload.token ? `${result.url}?access_token=${encodeURIComponent(upload.token)}` : result.url;
      link.hidden = false;
      link.setAttribute('aria-label', `Download ${file.name}`);
      say(`Done. SHA-256 ${result.sha256}`, { announce: true });
      pause.hidden = true;
      cancel.hidden = true;
    },
    onError(err) {
      say(`Failed: ${err.message} (${err.code}). Choose the file again to continue.`, { announce: true });
      status.classList.add('error');
      pause.hidden = true;
    },
  });

  pause.addEventListener('click', () => (upload.state === 'paused' ? upload.resume() : upload.pause()));
  cancel.addEventListener('click', () => upload.abort());
  row.upload = upload;
  upload.start();
}

function numberParam(name) {
  const v = params.get(name);
  return v == null || v === '' ? undefined : Number(v);
}
