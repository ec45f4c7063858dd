// A web page's use of the uploader, typed by static/tranche-upload.d.ts.
// `tsc --noEmit` must accept it, and must reject each line under a
// ts-expect-error directive (were the declarations `any`, those lines would
// pass and tsc would fail on the unused directive).

import {
  Estimate,
  Upload,
  UploadError,
  canRetryLater,
  formatBytes,
  formatDuration,
  type Processing,
  type UploadedFile,
  type UploadState,
} from '../../../static/tranche-upload.js';

const input = document.querySelector<HTMLInputElement>('#pick')!;
const bar = document.querySelector<HTMLProgressElement>('#bar')!;
const estimate = new Estimate();

input.onchange = async () => {
  const file = input.files?.[0];
  if (!file) return;
  const upload = new Upload(file, {
    endpoint: 'https://uploads.example.com/api/v1',
    parallel: 8,
    chunkSize: 16 << 20,
    retry: { retries: 3, maxElapsed: 60_000 },
    token: async () => (await fetch('/my-backend/upload-token')).text(),
    metadata: { course: '101' },
    onProgress: (acked, total, p) => {
      bar.value = p.fraction;
      const { speed, eta } = estimate.update(p.speed, total - acked);
      bar.title = `${formatBytes(acked)} of ${formatBytes(total)}, ${speed ?? 0} B/s, ${formatDuration(eta)} left`;
    },
    onChunk: ({ index, size, attempts }) => console.log(index, size, attempts),
    onRetry: ({ index, delay, error }) => console.log(index, delay, error.code),
    onStateChange: (state: UploadState, u) => console.log(state, u.id),
    onWarnings: (warnings) => warnings.forEach((w) => console.warn(w.toUpperCase())),
    onSuccess: (done) => console.log('stored', done.url, done.sha256),
    onProcessing: (p: Processing, u) => console.log(p.state, p.progress?.toFixed(2), p.revision, u.processing?.message),
    onError: (err) => console.error(err.code, err.message, err.status, canRetryLater(err.status, err.code)),
  });
  try {
    const stored: UploadedFile = await upload.start();
    console.log(stored.id, stored.size);
  } catch (e) {
    if (e instanceof UploadError && e.code === 'file_too_large') console.log(e.body?.message);
  }
  upload.pause();
  const again: Promise<UploadedFile> = upload.resume();
  void again;
  await upload.abort();
  upload.destroy();

  // @ts-expect-error: parallel is a number
  new Upload(file, { parallel: 'many' });
  // @ts-expect-error: no such option
  new Upload(file, { parralel: 4 });
  // @ts-expect-error: onSuccess gets the file, whose size is a number
  new Upload(file, { onSuccess: (f) => f.size.toUpperCase() });
  // @ts-expect-error: not a state
  const state: UploadState = 'done';
  void state;
  // @ts-expect-error: start() takes no arguments
  upload.start(file);
  // @ts-expect-error: not a processing state
  new Upload(file, { onProcessing: (p) => p.state === 'done' });
};
