/**
 * The lean GET's HTTP/1.1 client (adapters/http1-get.ts) against local servers: bodies framed by
 * Content-Length, chunked coding and the end of the connection, responses cut at every byte, keep-alive
 * reuse and what ends it, 1xx answers, bytes nobody asked for, premature close, malformed answers,
 * the connection limit, timeouts, and TLS.
 */
import { createHash } from "node:crypto";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { afterEach, describe, expect, it } from "vitest";
import { type BodySink, Http1Pool, type ResponseHead } from "#adapters/http1-get.ts";

// A self-signed certificate for localhost / 127.0.0.1, valid until 2126: test only, trusts nothing.
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUHx2mT/82wtn17QlA9FG3Nuyww3owCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEzMDExNDIyNloYDzIxMjYxMTA2
MTE0MjI2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQmeg/U5H9B8wNSPiQgYofzZF5YAGxKCP/OQObAojM5mRSyHELDGPzP
0E7q0mY3c48OVJUi8yhDTuwI8PIprDBxo28wbTAdBgNVHQ4EFgQUCOHbqNuf18K9
f8JczNIR/drVMYswHwYDVR0jBBgwFoAUCOHbqNuf18K9f8JczNIR/drVMYswDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSAAwRQIhAOV7NSbehTqdbqKthh4FosJc4ygn1urGx1BmaEWMlRiZAiAg
jKIrp/abEOADO77+B93p34mjPWOQ1rmz/9Q+mFyNYA==
-----END CERTIFICATE-----
`;
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAG8mXUAaOvk5EITY
9mF9nkeSbwRYlN180hhk+RK2wE6hRANCAAQmeg/U5H9B8wNSPiQgYofzZF5YAGxK
CP/OQObAojM5mRSyHELDGPzP0E7q0mY3c48OVJUi8yhDTuwI8PIprDBx
-----END PRIVATE KEY-----
`;

const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function listen(server: HttpServer | NetServer): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(
    () =>
      new Promise<void>((r) => {
        if ("closeAllConnections" in server) server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return (server.address() as { port: number }).port;
}

/** A raw TCP server: `answer` writes whatever it likes for each request it reads. */
async function rawServer(answer: (socket: Socket, request: number) => void): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    let text = "";
    let n = 0;
    socket.on("data", (d) => {
      text += d.toString("latin1");
      while (text.includes("\r\n\r\n")) {
        text = text.slice(text.indexOf("\r\n\r\n") + 4);
        answer(socket, n++);
      }
    });
    socket.on("error", () => {});
  });
  closers.push(() => {
    for (const s of sockets) s.destroy();
  });
  return listen(server);
}

function pool(
  port: number,
  options: Partial<ConstructorParameters<typeof Http1Pool>[1]> = {},
  https = false,
) {
  const p = new Http1Pool(
    { https, hostname: "127.0.0.1", port },
    { maxSockets: 8, connectionTimeoutMs: 2000, ...options },
  );
  closers.push(() => p.close());
  return p;
}

const timeoutError = () => Object.assign(new Error("request timeout"), { name: "TimeoutError" });

/** GETs `path` and collects status, headers and body (copied out of the read buffer). */
async function fetchAll(
  p: Http1Pool,
  path = "/",
  timeoutMs = 5000,
): Promise<{ head: ResponseHead; body: Buffer }> {
  let head: ResponseHead | undefined;
  const chunks: Buffer[] = [];
  await p.get(
    path,
    { host: "127.0.0.1" },
    (h): BodySink => {
      head = h;
      return {
        write: (view) => {
          chunks.push(Buffer.from(view));
          return undefined;
        },
        end: () => undefined,
      };
    },
    { timeoutMs, timeoutError },
  );
  return { head: head!, body: Buffer.concat(chunks) };
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const payload = (n: number, seed: number) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
};

describe("Http1Pool", () => {
  it("GIVEN sequential and concurrent GETs THEN every body arrives intact and keep-alive connections are reused", async () => {
    const server = createHttpServer((req, res) => {
      const seed = Number(req.url!.slice(1));
      const body = payload(524_288, seed);
      res.writeHead(200, { "content-length": body.byteLength, "x-seed": String(seed) });
      res.end(body);
    });
    const p = pool(await listen(server), { maxSockets: 4 });
    for (let i = 0; i < 5; i++) {
      const { head, body } = await fetchAll(p, `/${i}`);
      expect(head.status).toBe(200);
      expect(head.headers["x-seed"]).toBe(String(i));
      expect(sha(body)).toBe(sha(payload(524_288, i)));
    }
    expect(p.opened).toBe(1);
    const all = await Promise.all(Array.from({ length: 16 }, (_, i) => fetchAll(p, `/${i}`)));
    for (const [i, { body }] of all.entries())
      expect(sha(body), `request ${i}`).toBe(sha(payload(524_288, i)));
    expect(p.opened).toBeLessThanOrEqual(4);
  });

  it("GIVEN a chunked body with extensions and trailers THEN the body is reassembled and the connection reused", async () => {
    const port = await rawServer((socket) => {
      socket.write(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
          "5;ext=1\r\nhello\r\n" +
          "1\r\n \r\n" +
          "A\r\n0123456789\r\n" +
          "0\r\nx-trailer: yes\r\n\r\n",
      );
    });
    const p = pool(port);
    for (let i = 0; i < 3; i++) expect((await fetchAll(p)).body.toString()).toBe("hello 0123456789");
    expect(p.opened).toBe(1);
  });

  it("GIVEN a response delivered one byte per read THEN head, chunk lines and body are parsed across reads", async () => {
    const body = payload(3000, 9);
    const wire = Buffer.concat([
      Buffer.from(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3000\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
      ),
      body,
    ]);
    const chunked = Buffer.concat([
      Buffer.from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nbb8\r\n"),
      body,
      Buffer.from("\r\n0\r\n\r\n"),
    ]);
    const port = await rawServer((socket, n) => {
      const bytes = n === 0 ? wire : chunked;
      socket.setNoDelay(true);
      let i = 0;
      const next = () => {
        if (i >= bytes.byteLength || socket.destroyed) return;
        socket.write(bytes.subarray(i, i + 1));
        i++;
        setImmediate(next);
      };
      next();
    });
    const p = pool(port);
    const a = await fetchAll(p);
    expect(a.head.status).toBe(200); // the 100 Continue was skipped
    expect(a.head.headers["x-a"]).toBe("1, 2");
    expect(sha(a.body)).toBe(sha(body));
    const b = await fetchAll(p);
    expect(sha(b.body)).toBe(sha(body));
    expect(p.opened).toBe(1);
  });

  it("GIVEN Connection: close, or a body that ends with the connection THEN the body is complete and the next GET opens a new connection", async () => {
    let n = 0;
    const port = await rawServer((socket) => {
      if (n++ % 2 === 0) socket.write("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc");
      else socket.end("HTTP/1.0 200 OK\r\n\r\nuntil the end");
    });
    const p = pool(port);
    expect((await fetchAll(p)).body.toString()).toBe("abc");
    expect((await fetchAll(p)).body.toString()).toBe("until the end");
    expect((await fetchAll(p)).body.toString()).toBe("abc");
    expect(p.opened).toBe(3);
  });

  it("GIVEN bytes after a response THEN that connection is dropped, never reused for the next response", async () => {
    const port = await rawServer((socket, n) => {
      socket.write(
        `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n${n}${n}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nXX`,
      );
    });
    const p = pool(port);
    expect((await fetchAll(p)).body.toString()).toBe("00");
    // The stray second response must not be taken as the answer to the next request.
    expect((await fetchAll(p)).body.toString()).toBe("00");
    expect(p.opened).toBe(2);
  });

  it("GIVEN a connection cut mid-body, a malformed status line or a sink error THEN the GET rejects and the connection is not reused", async () => {
    const port = await rawServer((socket, n) => {
      if (n === 0 && socket.remotePort) {
        socket.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part");
        setTimeout(() => socket.destroy(), 10);
      }
    });
    const p = pool(port);
    await expect(fetchAll(p)).rejects.toMatchObject({ code: "ERR_STREAM_PREMATURE_CLOSE" });

    const bad = await rawServer((socket) => socket.write("HTTP/2 200\r\n\r\n"));
    await expect(fetchAll(pool(bad))).rejects.toMatchObject({ name: "HttpParseError" });

    const good = await rawServer((socket) =>
      socket.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    );
    const q = pool(good);
    const refused = new Error("refused by the sink");
    await expect(
      q.get("/", { host: "x" }, () => ({ write: () => refused, end: () => undefined }), {
        timeoutMs: 5000,
        timeoutError,
      }),
    ).rejects.toBe(refused);
    await expect(
      q.get("/", { host: "x" }, () => ({ write: () => undefined, end: () => refused }), {
        timeoutMs: 5000,
        timeoutError,
      }),
    ).rejects.toBe(refused);
    expect((await fetchAll(q)).body.toString()).toBe("hello");
    // The write error closed its connection; the end error (framing intact) kept it.
    expect(q.opened).toBe(2);
  });

  it("GIVEN an idle connection the server closed THEN the next GET opens a new one and succeeds", async () => {
    const port = await rawServer((socket) => {
      socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      setTimeout(() => socket.end(), 20); // the server's keep-alive timeout
    });
    const p = pool(port);
    expect((await fetchAll(p)).body.toString()).toBe("ok");
    // The client notices the close (polled, up to 5 s on a loaded machine).
    for (let i = 0; i < 100 && p.sockets > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(p.sockets).toBe(0);
    expect((await fetchAll(p)).body.toString()).toBe("ok");
    expect(p.opened).toBe(2);
  });

  it("GIVEN more GETs than maxSockets THEN at most maxSockets connections open, a queued GET can time out, and the rest complete", async () => {
    let open = 0;
    let maxOpen = 0;
    const server = createHttpServer((_req, res) => {
      setTimeout(() => {
        res.writeHead(200, { "content-length": 2 });
        res.end("ok");
      }, 100);
    });
    server.on("connection", (s) => {
      open++;
      maxOpen = Math.max(maxOpen, open);
      s.on("close", () => open--);
    });
    const p = pool(await listen(server), { maxSockets: 2 });
    const results = await Promise.allSettled([
      ...Array.from({ length: 6 }, () => fetchAll(p)),
      // Queued behind six 100 ms answers on two connections: it cannot be served within 20 ms.
      fetchAll(p, "/late", 20),
    ]);
    expect(results.slice(0, 6).every((r) => r.status === "fulfilled")).toBe(true);
    expect(results[6]).toMatchObject({ status: "rejected", reason: { name: "TimeoutError" } });
    expect(maxOpen).toBeLessThanOrEqual(2);
    expect(p.opened).toBe(2);
  });

  it("GIVEN an answer slower than the request timeout THEN the GET rejects with the timeout error", async () => {
    const port = await rawServer(() => {});
    await expect(fetchAll(pool(port), "/", 100)).rejects.toMatchObject({ name: "TimeoutError" });
  });

  it("GIVEN https with a trusted certificate THEN bodies arrive intact over TLS", async () => {
    const body = payload(300_000, 3);
    const server = createTlsServer({ key: TEST_KEY, cert: TEST_CERT }, (socket) => {
      socket.on("data", () => {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.byteLength}\r\n\r\n`);
        socket.write(body);
      });
      socket.on("error", () => {});
    });
    const port = await listen(server as unknown as NetServer);
    const p = pool(port, { ca: TEST_CERT }, true);
    for (let i = 0; i < 2; i++) expect(sha((await fetchAll(p)).body)).toBe(sha(body));
    expect(p.opened).toBe(1);
    // Without the CA the handshake fails: the certificate is checked.
    const untrusted = pool(port, {}, true);
    await expect(fetchAll(untrusted)).rejects.toMatchObject({ code: "DEPTH_ZERO_SELF_SIGNED_CERT" });
  });
});
