"""The front door against hostile and unlucky clients, with raw sockets.

Each finding of issue 10 has a test here: connections that hold nothing
(idle, slowloris, slow bodies), answers cut off on Connection: close, HTTP/1.0
or pipelining, broken chunked bodies, request smuggling, decoded paths,
DNS rebinding and CORS, NaN/Infinity, NUL and control bytes, and protocol
errors without a JSON answer. Every refusal is checked for its status and
code, for leaving Redis unchanged, and for the process still answering.
"""
import json
import resource
import socket
import threading
import time
import uuid

from harness import CtxdTestCase, main


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Conn:
    """A raw client connection that reads HTTP/1.x answers."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""  # bytes received and not used yet (pipelined answers)

    def send(self, data):
        self.sock.sendall(data)
        return self

    def _more(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def _take(self, n):
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, timeout=10):
        """One answer: (status, headers, body), or None when the connection
        closed before one began. Content-Length, chunked and close-delimited
        bodies."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._more(deadline):
                return None
        head = self._take(self.buf.index(b"\r\n\r\n") + 4)[:-4]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n and self._more(deadline):
                pass
            return status, headers, self._take(n)
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    if not self._more(deadline):
                        raise AssertionError("chunked answer cut off")
                size = int(self._take(self.buf.index(b"\r\n") + 2).split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    if not self._more(deadline):
                        raise AssertionError("chunked answer cut off")
                body += self._take(size + 2)[:-2]
                if size == 0:
                    return status, headers, body
        while self._more(deadline):  # close-delimited
            pass
        return status, headers, self._take(len(self.buf))

    def closed(self, timeout=5):
        """True when the server closes the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def http(method, path, body=b"", headers=None, version="1.1", host="localhost"):
    h = {"Host": host} if host else {}
    if body:
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = "%s %s HTTP/%s\r\n" % (method, path, version)
    head += "".join("%s: %s\r\n" % kv for kv in h.items())
    return head.encode() + b"\r\n" + body


class FrontDoorTest(CtxdTestCase):
    CTXD_ENV = {"CTXD_HEADER_TIMEOUT_MS": "1500", "CTXD_BODY_TIMEOUT_MS": "1500",
                "CTXD_CORS_ORIGINS": "http://app.example",
                "CTXD_MAX_MESSAGE_BYTES": "400000", "CTXD_MAX_BODY_BYTES": "2000000"}

    def conn(self):
        return Conn(self.ctxd.port)

    def assert_refused(self, payload, status, code, closes=True):
        """payload gets status with code, the connection closes, Redis stays
        as it was and the server still answers."""
        before = self.redis.snapshot()
        c = self.conn().send(payload)
        r = c.response()
        self.assertIsNotNone(r, "no answer to %r" % payload[:80])
        self.assertEqual(r[0], status, r)
        self.assertTrue(r[1]["content-type"].startswith("application/json"), r)
        self.assertEqual(json.loads(r[2])["code"], code, r)
        self.assertTrue(r[1].get("x-request-id"), r)
        if closes:
            self.assertTrue(c.closed(), "the connection stayed open after %r" % payload[:60])
        c.close()
        self.assertEqual(self.redis.snapshot(), before, "Redis changed")
        self.assertEqual(self.req("GET", "/healthz").status, 200)
        return r

    # 2. Answers arrive whole on every connection mode.
    def test_answers_arrive_whole(self):
        cid = self.create()
        big = "x" * 200000
        for _ in range(4):  # 20 messages of 200 kB: a GET of ~4 MB
            r = self.req("POST", "/mcp/context/%s/messages" % cid,
                         {"messages": [{"role": "user", "content": big}] * 5})
            self.assertEqual(r.status, 201, r)
        path = "/mcp/context/%s" % cid
        for mode in ("close", "1.0", "keep-alive"):
            for _ in range(5):
                c = self.conn()
                if mode == "1.0":
                    c.send(http("GET", path, version="1.0", host=None))
                else:
                    c.send(http("GET", path, headers={"Connection": mode}))
                status, headers, body = c.response(timeout=30)
                self.assertEqual(status, 200)
                self.assertEqual(len(body), int(headers["content-length"]))
                self.assertEqual(len(json.loads(body)["messages"]), 20, mode)
                if mode != "keep-alive":
                    self.assertTrue(c.closed())
                c.close()
        # Pipelined: ten requests in one write, the last with Connection: close.
        reqs = [http("GET", path)] * 4 + [http("GET", "/healthz")] * 5 + [
            http("GET", "/healthz", headers={"Connection": "close"})]
        c = self.conn().send(b"".join(reqs))
        for i in range(10):
            r = c.response(timeout=30)
            self.assertIsNotNone(r, "answer %d of 10 missing" % (i + 1))
            self.assertEqual(r[0], 200)
            json.loads(r[2])
        self.assertTrue(c.closed())
        c.close()
        # A turn with a ~250 kB answer, Connection: close: the client gets it.
        for _ in range(3):
            cid2 = self.create()
            body = json.dumps({"message": "y" * 250000}).encode()
            c = self.conn().send(http("POST", "/mcp/context/%s/message" % cid2, body,
                                      {"Connection": "close"}))
            status, headers, rb = c.response(timeout=30)
            self.assertEqual(status, 200)
            self.assertGreater(len(json.loads(rb)["ai_response"]), 250000)
            c.close()

    # 3. Broken chunked bodies are 400s, valid ones (extensions too) work.
    def test_chunked_bodies(self):
        doc = json.dumps({"system": "be brief", "ttl_seconds": 600, "strategy": "window"})
        raw = doc.encode()
        body = b"%x;x=y\r\n%s\r\n0\r\n\r\n" % (len(raw), raw)
        c = self.conn().send(http("POST", "/mcp/context", headers={
            "Transfer-Encoding": "chunked", "Content-Type": "application/json"}) + body)
        status, _, rb = c.response()
        self.assertEqual(status, 201, rb)
        c.close()
        ctx = self.req("GET", "/mcp/context/%s" % json.loads(rb)["context_id"]).json()
        self.assertEqual((ctx["system"], ctx["ttl_seconds"], ctx["strategy"]),
                         ("be brief", 600, "window"))
        head = http("POST", "/mcp/context", headers={
            "Transfer-Encoding": "chunked", "Content-Type": "application/json"})
        half = raw[:10]
        for name, broken in (
                ("bad size", b"zz\r\n" + raw + b"\r\n0\r\n\r\n"),
                ("longer than declared", b"%x\r\n%sEXTRA\r\n0\r\n\r\n" % (len(raw), raw)),
                ("size overflow", b"1" * 20 + b"\r\n" + raw + b"\r\n0\r\n\r\n"),
                ("control byte in an extension", b"%x;a\x01b\r\n%s\r\n0\r\n\r\n" % (
                    len(raw), raw))):
            with self.subTest(name):
                self.assert_refused(head + broken, 400, "bad_chunked_body")
        with self.subTest("cut before the last chunk"):
            before = self.redis.snapshot()
            c = self.conn().send(head + b"%x\r\n%s" % (len(raw), half))
            c.sock.shutdown(socket.SHUT_WR)  # the client is done sending
            r = c.response()
            self.assertEqual((r[0], json.loads(r[2])["code"]), (400, "incomplete_body"))
            c.close()
            self.assertEqual(self.redis.snapshot(), before)

    # 4. Smuggling building blocks.
    def test_smuggling(self):
        smuggled = http("POST", "/mcp/context")
        body = b'{"system":"a"}'
        self.assert_refused(
            http("POST", "/mcp/context", body, {"Content-Length": "%d" % len(body)})
            .replace(b"Content-Length: %d\r\n" % len(body),
                     b"Content-Length: %d\r\nContent-Length: 3\r\n" % len(body), 1),
            400, "bad_http_request")
        chunked_and_length = (
            b"POST /mcp/context HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n" + smuggled)
        self.assert_refused(chunked_and_length, 400, "bad_http_request")  # Redis unchanged:
        # the smuggled create never ran

    # 5. The raw path is routed; nothing decodes it into another route.
    def test_paths_are_not_decoded(self):
        cid = self.create()
        self.req("PUT", "/mcp/context/%s/state" % cid, {"k": 1})
        for path, status, code in (
                ("/mcp/context/%2e%2e/contexts", 404, "route_not_found"),
                ("/mcp/context/%s%%2Fstate" % cid, 404, "context_not_found"),
                ("/mcp/context/%s%%00junk" % cid, 404, "context_not_found"),
                ("/mcp/%63ontexts", 404, "route_not_found"),
                ("/mcp/context/../contexts", 404, "route_not_found")):
            with self.subTest(path=path):
                c = self.conn().send(http("GET", path))
                r = c.response()
                self.assertEqual((r[0], json.loads(r[2])["code"]), (status, code), r)
                c.close()
        for path in (b"/mcp/context/\x00x", b"/mcp/con text", b"/healthz\x7f"):
            with self.subTest(path=path):
                self.assert_refused(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
                                    400, "bad_http_request")

    # 6. DNS rebinding and CORS (every operation: test_openapi.py).
    def test_cors(self):
        cid = self.create()
        path = "/mcp/context/%s" % cid
        r = self.req("OPTIONS", path, headers={"Origin": "http://app.example",
                                               "Access-Control-Request-Method": "DELETE"})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.headers["access-control-allow-origin"], "http://app.example")
        self.assertEqual(r.headers["access-control-allow-methods"], "GET, HEAD, PATCH, DELETE")
        self.assertIn("Idempotency-Key", r.headers["access-control-allow-headers"])
        r = self.req("GET", path, headers={"Origin": "http://app.example"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["access-control-allow-origin"], "http://app.example")
        for origin in ("http://evil.example", "http://app.example.evil.com", "null"):
            with self.subTest(origin=origin):
                before = self.redis.snapshot()
                r = self.req("OPTIONS", path, headers={"Origin": origin,
                                                       "Access-Control-Request-Method": "DELETE"})
                self.assert_error(r, 403, "origin_not_allowed")
                self.assertNotIn("access-control-allow-origin", r.headers)
                r = self.req("DELETE", path, headers={"Origin": origin})
                self.assert_error(r, 403, "origin_not_allowed")
                self.assertEqual(self.redis.snapshot(), before)
        # Requests a page may send without a preflight are refused.
        before = self.redis.snapshot()
        for ct, body in (("text/plain", b""), ("text/plain", b'{"system":"x"}'),
                         ("application/x-www-form-urlencoded", b"a=b"),
                         ("multipart/form-data; boundary=x", b"")):
            with self.subTest(ct=ct):
                r = self.req("POST", "/mcp/context", raw=body, headers={"Content-Type": ct})
                self.assert_error(r, 415, "unsupported_media_type")
        r = self.req("POST", "/mcp/context", raw=b'{"system":"x"}')  # a body without a type
        self.assert_error(r, 415, "unsupported_media_type")
        self.assertEqual(self.redis.snapshot(), before)
        # The guide's bodiless POST keeps working.
        c = self.conn().send(b"POST /mcp/context HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(c.response()[0], 201)
        c.close()

    # 7 and 8. Strict JSON: NaN, Infinity, NUL and control bytes.
    def test_strict_json(self):
        cid = self.create()
        before = self.redis.snapshot()
        for path, method, raw in (
                ("/mcp/context", "POST", b'{"state": {"a": NaN}}'),
                ("/mcp/context", "POST", b'{"state": {"a": Infinity}}'),
                ("/mcp/context", "POST", b'{"max_context_tokens": -Infinity}'),
                ("/mcp/context/%s/state" % cid, "PUT", b'{"a": [1, NaN]}'),
                ("/mcp/context/%s/state" % cid, "PATCH", b'{"a": Infinity}'),
                ("/mcp/context", "POST", b'{"system": "a\\u0000b"}'),
                ("/mcp/context", "POST", b'{"model": "m\\u0000"}'),
                ("/mcp/context/%s/state" % cid, "PUT", b'{"a\\u0000one": 1, "a\\u0000two": 2}'),
                ("/mcp/context", "POST", b'{"system": "raw \x01 byte"}'),
                ("/mcp/context", "POST", b'{"system": "tab \t inside"}')):
            with self.subTest(body=raw):
                r = self.req(method, path, raw=raw, headers={"Content-Type": "application/json"})
                j = self.assert_error(r, 400, "invalid_json")
                self.assertIn("at byte", j["error"])
        self.assertEqual(self.redis.snapshot(), before)

    # 9. Every protocol error answers JSON.
    def test_protocol_errors_answer_json(self):
        for payload in (b"GET http://evil.example/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
                        b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n",
                        b"GET /healthz HTTP/1.1\r\n\r\n",
                        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                        b"GET /healthz HTTP/2.0\r\nHost: localhost\r\n\r\n",
                        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n folded\r\n\r\n",
                        b"GET /healthz HTTP/1.1\r\nHost : localhost\r\n\r\n",
                        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX: a\rb\r\n\r\n",
                        b"POST /mcp/context HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"):
            with self.subTest(payload=payload[:40]):
                self.assert_refused(payload, 400, "bad_http_request")
        # HTTP/1.0 without Host is HTTP/1.0: served.
        c = self.conn().send(b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertEqual(c.response()[0], 200)
        c.close()

    # 1 (in part). A declared oversize body is refused at once, and closed.
    def test_oversize_body_is_refused_at_once(self):
        t0 = time.monotonic()
        r = self.assert_refused(
            b"POST /mcp/context HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n{", 413, "body_too_large")
        self.assertLess(time.monotonic() - t0, 3, r)

    # 1 (in part). Slow heads and bodies get 408 within their time limits.
    def test_slow_requests_time_out(self):
        for name, payload, code in (
                ("slow head", b"GET /healthz HTTP/1.1\r\nHost: local", "request_timeout"),
                ("slow body", b"POST /mcp/context HTTP/1.1\r\nHost: localhost\r\n"
                              b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
                 "request_timeout")):
            with self.subTest(name):
                t0 = time.monotonic()
                c = self.conn().send(payload)
                for _ in range(3):  # keep trickling: the limit is per request, not per byte
                    time.sleep(0.3)
                    c.send(b"a")
                r = c.response(timeout=5)
                took = time.monotonic() - t0
                self.assertEqual((r[0], json.loads(r[2])["code"]), (408, code), r)
                self.assertTrue(1.4 < took < 3.5, took)
                self.assertTrue(c.closed())
                c.close()
        # A connection that never sends a byte is closed without an answer.
        c = self.conn()
        self.assertTrue(c.closed(timeout=5))
        c.close()


class HostileLoadTest(CtxdTestCase):
    """Hundreds of idle, slowloris and slow-body connections hold no worker:
    normal requests keep answering within a second (default limits, default
    64 workers)."""

    def test_normal_requests_stay_fast(self):
        raise_fd_limit()
        cid = self.create()
        self.turn(cid, "hello")
        port = self.ctxd.port
        held, stop = [], threading.Event()
        try:
            for _ in range(500):  # idle: connected, silent
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            slowloris, slowbody = [], []
            for i in range(200):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad-%d: " % i)
                slowloris.append(s)
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"POST /mcp/context HTTP/1.1\r\nHost: localhost\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{")
                slowbody.append(s)
            held += slowloris + slowbody

            def trickle():  # one byte per connection every half second
                while not stop.wait(0.5):
                    for s in slowloris + slowbody:
                        try:
                            s.send(b"a")
                        except OSError:
                            pass
            t = threading.Thread(target=trickle, daemon=True)
            t.start()
            times = []
            for i in range(100):
                path = "/healthz" if i % 2 else "/mcp/context/%s" % cid
                t0 = time.monotonic()
                r = self.req("GET", path, timeout=5)
                times.append(time.monotonic() - t0)
                self.assertEqual(r.status, 200, r)
            times.sort()
            print("100 requests with 900 hostile connections open: p50 %.1f ms, p99 %.1f ms, "
                  "max %.1f ms" % (times[49] * 1000, times[98] * 1000, times[-1] * 1000))
            self.assertLess(times[-1], 1.0, "a request took over 1 s")
        finally:
            stop.set()
            for s in held:
                s.close()


if __name__ == "__main__":
    main()
