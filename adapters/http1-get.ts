/**
 * A minimal HTTP/1.1 GET client over keep-alive sockets whose reads land in one reused buffer per
 * connection (the `onread` option of `net.connect` / `tls.connect`). A response body is handed to its
 * sink as views of that buffer, so a caller can copy it straight into a buffer of its own: no socket
 * read chunk is allocated per read.
 *
 * Why: `node:http` allocates a fresh ArrayBuffer (up to 64 KiB) for every socket read. A transfer
 * reads 2,048 blocks of 512 KiB per GiB, so that is 1 GiB of short-lived external memory per GiB
 * moved; the GC frees it late (external memory is only counted towards a collection in steps of tens
 * of MB) and glibc keeps the freed 64 KiB chunks in its heap arenas: ≈ 100 MB of the transfer
 * worker's peak RSS and a tenth of its CPU (docs/performance.md, "Transfer").
 *
 * Scope: what GetSnapshotBlock needs and nothing more — GET only, responses framed by Content-Length,
 * chunked transfer coding or the end of the connection, 1xx answers skipped, keep-alive unless the
 * server says `Connection: close`. Errors: the socket's own (ECONNREFUSED, ECONNRESET … as Node
 * reports them), `ERR_STREAM_PREMATURE_CLOSE` when a connection ends before its response, a
 * `TimeoutError` for the connection and request timeouts, `HttpParseError` for a malformed response.
 */
import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";

/** Where one pool connects. */
export interface Http1Target {
  readonly https: boolean;
  /** Host name or IP address (no brackets around IPv6). */
  readonly hostname: string;
  readonly port: number;
}

export interface Http1PoolOptions {
  /** Connections open at most; further requests wait for one. */
  readonly maxSockets: number;
  /** A connection (TCP, and TLS with https) must be established within this. */
  readonly connectionTimeoutMs: number;
  /** Bytes of each connection's read buffer. @default 65536 */
  readonly readBufferBytes?: number;
  /** Trusted CA certificates for https instead of Node's (tests). @default Node's */
  readonly ca?: string | Buffer;
}

/** A response's status and headers (names in lower case; repeated headers joined with ", "). */
export interface ResponseHead {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
}

/**
 * Receives a response body. `write` gets each piece as a view of the connection's read buffer that is
 * valid only during the call (copy what you keep); returning an Error aborts the exchange (the
 * connection is closed, `get` rejects with it).
 */
export interface BodySink {
  write(view: Buffer): Error | undefined;
  /** The body is complete; an Error makes `get` reject with it (the connection stays reusable). */
  end(): Error | undefined;
}

export interface GetOptions {
  /** The whole exchange (waiting for a connection included). */
  readonly timeoutMs: number;
  /** The error a timeout rejects with. */
  readonly timeoutError: () => Error;
}

/** A response the client cannot parse (the connection is closed). */
export class HttpParseError extends Error {
  override readonly name = "HttpParseError";
  readonly code = "HPE_INVALID";
}

/** The connection closed before the response ended (Node's code for it). */
function prematureClose(): Error {
  return Object.assign(new Error("the connection closed before the response ended"), {
    code: "ERR_STREAM_PREMATURE_CLOSE",
  });
}

function connectTimeout(ms: number): Error {
  const e = new Error(`Socket timed out without establishing a connection within ${ms} ms`);
  e.name = "TimeoutError";
  return e;
}

const MAX_HEAD = 64 * 1024;
const MAX_CHUNK_LINE = 4096;

/** One request/response on a connection. */
interface Exchange {
  readonly onHead: (head: ResponseHead) => BodySink;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  settled: boolean;
}

type BodyState =
  | { readonly kind: "length"; remaining: number }
  | { readonly kind: "chunked"; phase: "size" | "data" | "data-crlf" | "trailers"; remaining: number }
  | { readonly kind: "close" };

/** One keep-alive connection and its response parser. */
class Conn {
  readonly socket: Socket;
  readonly #pool: Http1Pool;
  exchange: Exchange | undefined;
  /** Set once the connection must not be reused (closed, errored, framing lost). */
  dead = false;
  connected = false;
  #head: Buffer;
  #headLen = 0;
  #body: BodyState | undefined;
  #sink: BodySink | undefined;
  #keepAlive = true;
  /** The chunk-size line (or a trailer line) being read. */
  #line = "";
  /** A response completed during the current read; the connection is released after it. */
  #finished = false;

  constructor(pool: Http1Pool, target: Http1Target, readBuffer: Buffer, ca: string | Buffer | undefined) {
    this.#pool = pool;
    this.#head = Buffer.allocUnsafe(4096);
    const onread = {
      buffer: readBuffer,
      callback: (n: number, buf: Buffer) => {
        this.#onData(buf.subarray(0, n));
        return true;
      },
    };
    const socket: Socket = target.https
      ? tlsConnect({
          host: target.hostname,
          port: target.port,
          // SNI only for host names (RFC 6066 forbids IP literals).
          ...(/^[\d.]+$|:/.test(target.hostname) ? {} : { servername: target.hostname }),
          ALPNProtocols: ["http/1.1"],
          ...(ca !== undefined ? { ca } : {}),
          // Documented for tls.connect (as for net.connect), missing from @types/node's TLS options.
          ...({ onread } as object),
        })
      : netConnect({ host: target.hostname, port: target.port, onread });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.once(target.https ? "secureConnect" : "connect", () => {
      this.connected = true;
      socket.setKeepAlive(true, 1000);
    });
    socket.on("error", (error) => this.#fail(error));
    socket.on("end", () => this.#onEnd());
    socket.on("close", () => this.#onEnd());
  }

  /** Sends a GET on this (idle) connection. */
  send(path: string, headers: Readonly<Record<string, string>>, exchange: Exchange): void {
    this.exchange = exchange;
    this.#finished = false;
    this.#headLen = 0;
    this.#body = undefined;
    this.#sink = undefined;
    this.#keepAlive = true;
    let text = `GET ${path} HTTP/1.1\r\n`;
    for (const name of Object.keys(headers)) text += `${name}: ${headers[name]}\r\n`;
    text += "\r\n";
    this.socket.write(text, "latin1");
  }

  destroy(error?: Error): void {
    this.dead = true;
    this.socket.destroy(error);
  }

  #fail(error: unknown): void {
    this.dead = true;
    const x = this.exchange;
    this.exchange = undefined;
    if (x && !x.settled) {
      x.settled = true;
      x.reject(error);
    }
    this.socket.destroy();
    this.#pool.forget(this);
  }

  #onEnd(): void {
    if (this.exchange && this.#body?.kind === "close") {
      this.#complete();
      this.#finished = false;
      this.dead = true;
      this.#pool.done(this);
      return;
    }
    this.#fail(prematureClose());
  }

  /** The response is complete: resolves the exchange; the connection is released by the reader. */
  #complete(): void {
    const x = this.exchange;
    const sink = this.#sink;
    this.exchange = undefined;
    this.#sink = undefined;
    this.#body = undefined;
    if (!this.#keepAlive) this.dead = true;
    this.#finished = true;
    if (x && !x.settled) {
      x.settled = true;
      let error: unknown;
      try {
        error = sink?.end();
      } catch (e) {
        error = e;
      }
      if (error === undefined) x.resolve();
      else x.reject(error);
    }
  }

  #onData(data: Buffer): void {
    if (this.exchange === undefined) {
      // Bytes nobody asked for (on an idle connection, or after a response): framing is lost.
      this.#fail(new HttpParseError("data on a connection with no request in flight"));
      return;
    }
    let at = 0;
    while (at < data.byteLength && this.exchange !== undefined) {
      if (this.#body === undefined) {
        const used = this.#readHead(data, at);
        if (used < 0) return; // failed
        at += used;
        continue;
      }
      const body = this.#body;
      if (body.kind === "length") {
        const take = Math.min(body.remaining, data.byteLength - at);
        if (!this.#write(data.subarray(at, at + take))) return;
        at += take;
        body.remaining -= take;
        if (body.remaining === 0) this.#complete();
      } else if (body.kind === "close") {
        if (!this.#write(data.subarray(at))) return;
        at = data.byteLength;
      } else {
        const used = this.#readChunked(body, data, at);
        if (used < 0) return;
        at += used;
      }
    }
    if (!this.#finished) return;
    this.#finished = false;
    // Released only now, after the whole read was looked at: a connection handed on inside the loop
    // would take the rest of this read as the start of its next response.
    if (at < data.byteLength) this.#fail(new HttpParseError("bytes after the end of a response"));
    else this.#pool.done(this);
  }

  #write(view: Buffer): boolean {
    const error = this.#sink!.write(view);
    if (error === undefined) return true;
    this.#fail(error);
    return false;
  }

  /** Accumulates the status line and headers; returns the bytes of `data` used, or -1 on failure. */
  #readHead(data: Buffer, at: number): number {
    const before = this.#headLen;
    const avail = data.byteLength - at;
    if (before + avail > this.#head.byteLength) {
      const size = Math.min(MAX_HEAD, Math.max(this.#head.byteLength * 2, before + avail));
      if (size > this.#head.byteLength) {
        const bigger = Buffer.allocUnsafe(size);
        this.#head.copy(bigger, 0, 0, before);
        this.#head = bigger;
      }
    }
    const take = Math.min(avail, this.#head.byteLength - before);
    data.copy(this.#head, before, at, at + take);
    this.#headLen = before + take;
    const end = this.#head.subarray(0, this.#headLen).indexOf("\r\n\r\n", Math.max(0, before - 3), "latin1");
    if (end < 0) {
      if (this.#headLen >= MAX_HEAD) {
        this.#fail(new HttpParseError(`response headers longer than ${MAX_HEAD} bytes`));
        return -1;
      }
      return take;
    }
    const used = end + 4 - before;
    const head = parseHead(this.#head.toString("latin1", 0, end));
    this.#headLen = 0;
    if (head instanceof Error) {
      this.#fail(head);
      return -1;
    }
    if (head.status >= 100 && head.status < 200) return used; // informational: the real answer follows
    const connection = (head.headers.connection ?? "").toLowerCase();
    this.#keepAlive =
      head.version === "1.1" ? !connection.includes("close") : connection.includes("keep-alive");
    const te = head.headers["transfer-encoding"];
    const cl = head.headers["content-length"];
    if (te !== undefined) {
      if (te.toLowerCase() !== "chunked") {
        this.#fail(new HttpParseError(`unsupported transfer-encoding ${JSON.stringify(te)}`));
        return -1;
      }
      this.#body = { kind: "chunked", phase: "size", remaining: 0 };
      this.#line = "";
    } else if (cl !== undefined) {
      if (!/^\d+$/.test(cl)) {
        this.#fail(new HttpParseError(`invalid content-length ${JSON.stringify(cl)}`));
        return -1;
      }
      this.#body = { kind: "length", remaining: Number(cl) };
    } else if (head.status === 204 || head.status === 304) {
      this.#body = { kind: "length", remaining: 0 };
    } else {
      this.#body = { kind: "close" };
      this.#keepAlive = false;
    }
    try {
      this.#sink = this.exchange!.onHead({ status: head.status, headers: head.headers });
    } catch (error) {
      this.#fail(error);
      return -1;
    }
    if (this.#body.kind === "length" && this.#body.remaining === 0) this.#complete();
    return used;
  }

  /** Chunked transfer coding (RFC 9112 §7.1); returns the bytes of `data` used, or -1 on failure. */
  #readChunked(body: Extract<BodyState, { kind: "chunked" }>, data: Buffer, start: number): number {
    let at = start;
    while (at < data.byteLength && this.#body === body) {
      if (body.phase === "data") {
        const take = Math.min(body.remaining, data.byteLength - at);
        if (!this.#write(data.subarray(at, at + take))) return -1;
        at += take;
        body.remaining -= take;
        if (body.remaining === 0) {
          body.phase = "data-crlf";
          this.#line = "";
        }
        continue;
      }
      // A line: the chunk size, the CRLF after a chunk's data, or a trailer (empty line ends it).
      const nl = data.indexOf(0x0a, at);
      const stop = nl < 0 ? data.byteLength : nl + 1;
      this.#line += data.toString("latin1", at, stop);
      at = stop;
      if (this.#line.length > MAX_CHUNK_LINE) {
        this.#fail(new HttpParseError("chunk line too long"));
        return -1;
      }
      if (nl < 0) break;
      const line = this.#line.replace(/\r?\n$/, "");
      this.#line = "";
      if (body.phase === "data-crlf") {
        if (line !== "") {
          this.#fail(new HttpParseError("missing CRLF after chunk data"));
          return -1;
        }
        body.phase = "size";
      } else if (body.phase === "size") {
        const m = /^([0-9a-fA-F]{1,12})(;.*)?$/.exec(line.trim());
        if (!m) {
          this.#fail(new HttpParseError(`invalid chunk size ${JSON.stringify(line)}`));
          return -1;
        }
        const size = Number.parseInt(m[1]!, 16);
        if (size === 0) body.phase = "trailers";
        else {
          body.phase = "data";
          body.remaining = size;
        }
      } else if (line === "") {
        this.#complete();
      }
    }
    return at - start;
  }
}

/** Parses "HTTP/1.x status reason" and the header lines. */
function parseHead(
  text: string,
): { version: "1.0" | "1.1"; status: number; headers: Record<string, string> } | HttpParseError {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0] ?? "");
  if (!m) return new HttpParseError(`invalid status line ${JSON.stringify((lines[0] ?? "").slice(0, 100))}`);
  const headers: Record<string, string> = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    if (colon <= 0) return new HttpParseError(`invalid header line ${JSON.stringify(line.slice(0, 100))}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { version: m[1] === "1" ? "1.1" : "1.0", status: Number(m[2]), headers };
}

/**
 * Keep-alive connections to one target, at most `maxSockets`, reused last-in first-out. Idle
 * connections do not keep the process alive (`unref`).
 */
export class Http1Pool {
  readonly #target: Http1Target;
  readonly #options: Http1PoolOptions;
  readonly #all = new Set<Conn>();
  readonly #idle: Conn[] = [];
  readonly #waiters: ((c: Conn) => void)[] = [];
  /** Read buffers of closed connections, for the next ones. */
  readonly #spareBuffers: Buffer[] = [];
  #closed = false;
  /** Connections opened so far (stats, tests). */
  opened = 0;

  constructor(target: Http1Target, options: Http1PoolOptions) {
    if (!Number.isInteger(options.maxSockets) || options.maxSockets < 1) {
      throw new TypeError(`expected maxSockets >= 1, got ${options.maxSockets}`);
    }
    this.#target = target;
    this.#options = options;
  }

  /** Open connections (in use or idle). */
  get sockets(): number {
    return this.#all.size;
  }

  /**
   * GET `path` with `headers` (the Host header included). `onHead` gets the status and headers and
   * returns the body's sink; resolves once the whole body went to it.
   */
  get(
    path: string,
    headers: Readonly<Record<string, string>>,
    onHead: (head: ResponseHead) => BodySink,
    options: GetOptions,
  ): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("the HTTP connection pool is closed"));
    return new Promise<void>((resolve, reject) => {
      let conn: Conn | undefined;
      let timer: NodeJS.Timeout | undefined;
      let connectTimer: NodeJS.Timeout | undefined;
      const clear = () => {
        clearTimeout(timer);
        clearTimeout(connectTimer);
      };
      const exchange: Exchange = {
        onHead,
        resolve: () => {
          clear();
          resolve();
        },
        reject: (error) => {
          clear();
          reject(error);
        },
        settled: false,
      };
      const waiter = (c: Conn) => {
        if (exchange.settled) {
          this.done(c); // timed out while waiting: pass the connection on
          return;
        }
        conn = c;
        c.socket.ref();
        if (!c.connected) {
          const ms = this.#options.connectionTimeoutMs;
          connectTimer = setTimeout(() => c.destroy(connectTimeout(ms)), ms);
          c.socket.once(this.#target.https ? "secureConnect" : "connect", () => clearTimeout(connectTimer));
        }
        c.send(path, headers, exchange);
      };
      timer = setTimeout(() => {
        if (conn) conn.destroy(options.timeoutError());
        else {
          const i = this.#waiters.indexOf(waiter);
          if (i >= 0) this.#waiters.splice(i, 1);
          exchange.settled = true;
          reject(options.timeoutError());
        }
      }, options.timeoutMs);
      this.#acquire(waiter);
    });
  }

  /** Closes every connection; later `get` calls reject. */
  close(): void {
    this.#closed = true;
    for (const c of this.#all) c.destroy();
    this.#all.clear();
    this.#idle.length = 0;
  }

  #acquire(waiter: (c: Conn) => void): void {
    for (;;) {
      const c = this.#idle.pop();
      if (!c) break;
      if (!c.dead && !c.socket.destroyed) {
        waiter(c);
        return;
      }
    }
    if (this.#all.size < this.#options.maxSockets) {
      waiter(this.#open());
      return;
    }
    this.#waiters.push(waiter);
  }

  #open(): Conn {
    const buffer = this.#spareBuffers.pop() ?? Buffer.allocUnsafeSlow(this.#options.readBufferBytes ?? 65536);
    const c = new Conn(this, this.#target, buffer, this.#options.ca);
    c.socket.once("close", () => this.#spareBuffers.push(buffer));
    this.#all.add(c);
    this.opened++;
    return c;
  }

  /** A connection finished its exchange: reuse it, or close it if it cannot be reused. */
  done(c: Conn): void {
    if (c.dead || this.#closed) {
      c.destroy();
      this.forget(c);
      return;
    }
    const next = this.#waiters.shift();
    if (next) {
      next(c);
      return;
    }
    c.socket.unref();
    this.#idle.push(c);
  }

  /** A connection closed: drop it, and open one for a waiting request if there is room. */
  forget(c: Conn): void {
    if (!this.#all.delete(c)) return;
    const i = this.#idle.indexOf(c);
    if (i >= 0) this.#idle.splice(i, 1);
    if (!this.#closed && this.#waiters.length > 0 && this.#all.size < this.#options.maxSockets) {
      this.#waiters.shift()!(this.#open());
    }
  }
}
