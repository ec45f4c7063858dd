// A loopback HTTP proxy between the browser and tranche that counts the chunk
// bytes it forwards and can slow chunks down or make chosen attempts fail:
// the network faults a real uploader meets, on demand.
import { createServer, request } from 'node:http';

const CHUNK_PATH = /^\/api\/v1\/uploads\/[^/]+\/chunks\/(\d+)$/;

export class Proxy {
  /**
   * `target`: the server's origin. `chunkDelay`: ms to hold each chunk's
   * answer (so an upload lasts long enough to interrupt). `fault(index,
   * attempt)`: null to pass the chunk on, or `'503'`, `'507'`, `'drop'`, `'corrupt'`,
   * or `'hold'`: read the whole body but pass none of it on and answer nothing,
   * until `release()` breaks the connection (the browser then counts the
   * chunk as sent while the server has none of it).
   */
  static async start(target, { chunkDelay = 0, fault = () => null } = {}) {
    const proxy = new Proxy(new URL(target), chunkDelay, fault);
    await new Promise((ok) => proxy.server.listen(0, '127.0.0.1', ok));
    proxy.port = proxy.server.address().port;
    return proxy;
  }

  constructor(target, chunkDelay, fault) {
    this.target = target;
    this.chunkDelay = chunkDelay;
    this.fault = fault;
    /** Chunk body bytes passed on to the server. */
    this.chunkBytes = 0;
    /** Chunk requests seen, per index. */
    this.attempts = new Map();
    this.chunkRequests = 0;
    /** Requests held by the `'hold'` fault, until release(). */
    this.held = [];
    this.sockets = new Set();
    this.server = createServer((req, res) => this.#handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  #handle(req, res) {
    const m = req.method === 'PUT' && CHUNK_PATH.exec(req.url.split('?')[0]);
    if (!m) return this.#forward(req, res, 0);
    const index = Number(m[1]);
    const attempt = (this.attempts.get(index) ?? 0) + 1;
    this.attempts.set(index, attempt);
    this.chunkRequests++;
    const fault = this.fault(index, attempt);
    const injected = { 503: 'store_unavailable', 507: 'insufficient_storage' }[fault];
    if (injected) {
      req.resume();
      req.on('end', () => {
        res.writeHead(Number(fault), { 'Content-Type': 'application/json', 'Retry-After': '1' });
        res.end(JSON.stringify({ error: injected, message: 'injected by the test proxy' }));
      });
      return;
    }
    if (fault === 'hold') {
      req.resume();
      this.held.push(req);
      return;
    }
    if (fault === 'drop') {
      // The connection breaks in the middle of the answer. (Breaking it before
      // any answer is not enough: Chromium silently resends a request whose
      // reused connection was reset, and the uploader never sees a failure.)
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '100' });
        res.write('{"index":');
        setTimeout(() => req.socket.destroy(), 20);
      });
      return;
    }
    return this.#forward(req, res, this.chunkDelay, fault === 'corrupt');
  }

  #forward(req, res, delay, corrupt = false) {
    const upstream = request(
      {
        host: this.target.hostname,
        port: this.target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        const send = () => {
          res.writeHead(answer.statusCode, answer.headers);
          answer.pipe(res);
        };
        if (delay > 0) setTimeout(send, delay);
        else send();
      },
    );
    upstream.on('error', () => {
      if (!res.headersSent) {
        res.writeHead(502, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: 'bad_gateway', message: 'tranche is not reachable' }));
      } else {
        res.destroy();
      }
    });
    let first = true;
    req.on('data', (data) => {
      if (req.method === 'PUT') this.chunkBytes += data.length;
      if (corrupt && first && data.length > 0) {
        data = Buffer.from(data);
        data[0] ^= 0xff;
      }
      first = false;
      upstream.write(data);
    });
    req.on('end', () => upstream.end());
    req.on('error', () => upstream.destroy());
  }

  /** Breaks the connections of the held requests: the browser sees a network error. */
  release() {
    for (const req of this.held.splice(0)) req.socket.destroy();
  }

  async stop() {
    for (const s of this.sockets) s.destroy();
    await new Promise((ok) => this.server.close(ok));
  }
}
