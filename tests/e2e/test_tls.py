"""HTTPS: ctxd with CTXD_TLS_CERT / CTXD_TLS_KEY, spoken to with Python's ssl module.

The certificate is made here with the openssl tool (CN localhost, SAN
localhost and 127.0.0.1) and is the only CA the client trusts, so every
connection really verifies it. Covers the API over HTTPS (keep-alive,
pipelining, streams, a megabyte each way, a slow reader), TLS 1.1 refused,
plain HTTP and garbage on the HTTPS port, and the start-up errors of bad
certificate or key files.
"""
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import warnings

import harness
from harness import (CTXD_BIN, Ctxd, Redis, Response, main, require_tool, sse_events,
                     wait_until)

INSTALL = "install it with: scripts/deps.sh test (Debian: apt-get install openssl)"


def openssl(*args):
    subprocess.run([shutil.which("openssl")] + list(args), check=True, capture_output=True,
                   timeout=60)


def make_pair(d, name):
    """A self-signed certificate and its key (P-256) in d: (cert, key)."""
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    return cert, key


def read_to_eof(sock, timeout=10):
    """Everything until the peer closes; (bytes, closed) where closed is
    False only when the peer kept the connection open past timeout."""
    data, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except socket.timeout:
        return data, False
    except ConnectionResetError:
        return data, True
    return data, False


class TlsTest(unittest.TestCase):
    """One redis-server and one ctxd serving HTTPS for the class."""

    @classmethod
    def setUpClass(cls):
        require_tool("openssl", INSTALL)
        cls.dir = tempfile.mkdtemp(prefix="ctxd-tls-")
        cls.cert, cls.key = make_pair(cls.dir, "site")
        cls.redis = Redis().start()
        cls.ctxd = Ctxd(cls.redis.url, env={
            "CTXD_TLS_CERT": cls.cert, "CTXD_TLS_KEY": cls.key,
            "CTXD_HEADER_TIMEOUT_MS": "2000",  # a stalled handshake is closed soon
            "CTXD_ECHO_DELAY_MS": "200",  # a stream comes in several writes
        }).start(wait=False)
        cls.ctx = ssl.create_default_context(cafile=cls.cert)

        def up():
            if cls.ctxd.proc.poll() is not None:
                raise AssertionError("ctxd exited with %s:\n%s" % (cls.ctxd.proc.returncode,
                                                                   cls.ctxd.log()))
            try:
                return cls.https("GET", "/healthz", timeout=2).status == 200
            except OSError:
                return False
        try:
            wait_until(up, timeout=15, what="ctxd /healthz over HTTPS")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.ctxd.stop_ok()
        finally:
            cls.ctxd.cleanup()
            cls.redis.cleanup()
            shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def connect(cls, timeout=30):
        return http.client.HTTPSConnection("127.0.0.1", cls.ctxd.port, context=cls.ctx,
                                           timeout=timeout)

    @classmethod
    def https(cls, method, path, body=None, headers=None, conn=None, timeout=30):
        """One request over HTTPS, on conn (kept open) or a fresh connection."""
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        c = conn or cls.connect(timeout)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            if conn is None:
                c.close()

    def raw(self, timeout=10):
        """A plain TCP connection to the HTTPS port."""
        return socket.create_connection(("127.0.0.1", self.ctxd.port), timeout=timeout)

    def create(self, conn=None):
        r = self.https("POST", "/mcp/context", {}, conn=conn)
        self.assertEqual(r.status, 201, r)
        return r.json()["context_id"]

    def assert_alive(self):
        r = self.https("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "ok")

    def test_healthz_verified_and_untrusted_refused(self):
        self.assert_alive()
        with socket.create_connection(("127.0.0.1", self.ctxd.port), timeout=10) as s:
            with self.ctx.wrap_socket(s, server_hostname="localhost") as t:
                self.assertIn(t.version(), ("TLSv1.2", "TLSv1.3"))
                self.assertEqual(t.getpeercert()["subject"], ((("commonName", "localhost"),),))
        # Verification really happens: a client that does not trust it refuses.
        with socket.create_connection(("127.0.0.1", self.ctxd.port), timeout=10) as s:
            with self.assertRaises(ssl.SSLCertVerificationError):
                ssl.create_default_context().wrap_socket(s, server_hostname="localhost")
        self.assert_alive()

    def test_tls12_gets_a_modern_cipher(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", self.ctxd.port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                self.assertEqual(t.version(), "TLSv1.2")
                name = t.cipher()[0]
                self.assertTrue(name.startswith("ECDHE-"), name)
                self.assertTrue("GCM" in name or "CHACHA20" in name, name)
                t.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data, closed = read_to_eof(t)
        self.assertTrue(closed)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:200])

    def test_create_turn_read_flow(self):
        cid = self.create()
        r = self.https("POST", "/mcp/context/%s/message" % cid, {"message": "hello over tls"})
        self.assertEqual(r.status, 200, r)
        answer = r.json()["ai_response"]
        self.assertTrue(answer, r)
        g = self.https("GET", "/mcp/context/" + cid)
        self.assertEqual(g.status, 200, g)
        self.assertEqual([(m["role"], m["content"]) for m in g.json()["messages"]],
                         [("user", "hello over tls"), ("assistant", answer)])

    def test_keep_alive_many_requests_on_one_connection(self):
        conn = self.connect()
        try:
            cid = self.create(conn=conn)
            sock = conn.sock
            for i in range(5):
                r = self.https("POST", "/mcp/context/%s/message" % cid, {"message": "m%d" % i},
                               conn=conn)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers.get("connection"), "keep-alive")
                g = self.https("GET", "/healthz", conn=conn)
                self.assertEqual(g.status, 200, g)
                self.assertIs(conn.sock, sock, "the TLS connection was not kept")
            g = self.https("GET", "/mcp/context/" + cid, conn=conn)
            self.assertEqual(len(g.json()["messages"]), 10)
        finally:
            conn.close()

    def test_pipelined_requests_in_one_record(self):
        with self.ctx.wrap_socket(self.raw(), server_hostname="localhost") as t:
            one = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            last = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            t.sendall(one * 3 + last)
            data, closed = read_to_eof(t)
        self.assertTrue(closed)
        self.assertEqual(data.count(b"HTTP/1.1 200 "), 4, data)

    def test_expect_100_continue(self):
        body = b"{}"
        with self.ctx.wrap_socket(self.raw(), server_hostname="localhost") as t:
            t.sendall(b"POST /mcp/context HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                      b"Connection: close\r\nContent-Length: 2\r\n\r\n")
            cont = b""
            while not cont.endswith(b"\r\n\r\n"):
                chunk = t.recv(1)
                self.assertTrue(chunk, "closed before 100 Continue")
                cont += chunk
            self.assertEqual(cont, b"HTTP/1.1 100 Continue\r\n\r\n")
            t.sendall(body)
            data, closed = read_to_eof(t)
        self.assertTrue(closed)
        self.assertTrue(data.startswith(b"HTTP/1.1 201 "), data[:300])

    def test_streamed_turn_read_to_the_end(self):
        cid = self.create()
        words = " ".join("w%d" % i for i in range(30))
        r = self.https("POST", "/mcp/context/%s/message" % cid, {"message": words, "stream": True})
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers["content-type"].startswith("text/event-stream"), r.headers)
        ev = sse_events(r.body)
        self.assertGreater(len(ev), 2, ev)
        self.assertEqual(ev[-1][0], "done")
        self.assertTrue(all(e == "delta" for e, _ in ev[:-1]), ev)
        self.assertEqual("".join(d["text"] for _, d in ev[:-1]), ev[-1][1]["ai_response"])
        self.assertIn("w29", ev[-1][1]["ai_response"])

    def big_context(self, n=5):
        """A context holding n 200 kB messages, appended four (800 kB) at a time."""
        cid = self.create()
        msgs = [{"role": "user", "content": chr(ord("a") + i % 26) * 200000} for i in range(n)]
        for i in range(0, n, 4):
            r = self.https("POST", "/mcp/context/%s/messages" % cid, {"messages": msgs[i:i + 4]})
            self.assertEqual(r.status, 201, r)
        return cid, msgs

    def test_megabyte_answer_arrives_whole(self):
        cid, msgs = self.big_context()
        g = self.https("GET", "/mcp/context/" + cid)
        self.assertEqual(g.status, 200, g)
        self.assertGreater(len(g.body), 1000000)
        self.assertEqual([m["content"] for m in g.json()["messages"]],
                         [m["content"] for m in msgs])

    def test_body_in_odd_sized_records(self):
        # Records that do not fill ctxd's input buffer evenly leave bytes
        # inside OpenSSL, which epoll never announces.
        cid = self.create()
        msgs = [{"role": "user", "content": "x" * 200000} for _ in range(4)]
        body = json.dumps({"messages": msgs}).encode()
        head = ("POST /mcp/context/%s/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % (cid, len(body))).encode()
        closing = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        data = head + body + closing
        with self.ctx.wrap_socket(self.raw(timeout=30), server_hostname="localhost") as t:
            for i in range(0, len(data), 7001):
                t.sendall(data[i:i + 7001])
            answers, closed = read_to_eof(t, timeout=30)
        self.assertTrue(closed)
        self.assertTrue(answers.startswith(b"HTTP/1.1 201 "), answers[:300])
        self.assertEqual(answers.count(b"HTTP/1.1 200 "), 1, answers[-300:])
        g = self.https("GET", "/mcp/context/" + cid).json()["messages"]
        self.assertEqual([m["content"] for m in g], [m["content"] for m in msgs])

    def test_request_tail_held_inside_tls(self):
        # While a turn keeps the connection at a worker (the echo model's
        # delay), the next request arrives whole, in 7001-byte records. ctxd
        # then reads until its 32 kB input buffer is full: the last record
        # straddles the end, and its rest waits inside OpenSSL with nothing
        # left on the socket, so no epoll event will ever announce it.
        cid = self.create()
        turn = json.dumps({"message": "wait a little"}).encode()
        first = ("POST /mcp/context/%s/message HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                 % (cid, len(turn))).encode() + turn

        def append(pad):
            body = json.dumps({"messages": [{"role": "user", "content": "y" * pad}]}).encode()
            return ("POST /mcp/context/%s/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\nConnection: close\r\n"
                    "Content-Length: %d\r\n\r\n" % (cid, len(body))).encode() + body
        pad = 35000 - len(append(0))
        second = append(pad)
        while len(second) != 35000:  # the Content-Length digits may shift it
            pad += 35000 - len(second)
            second = append(pad)
        with self.ctx.wrap_socket(self.raw(timeout=30), server_hostname="localhost") as t:
            t.sendall(first)
            time.sleep(0.05)  # read and handed over alone
            for i in range(0, len(second), 7001):
                t.send(second[i:i + 7001])
            answers, closed = read_to_eof(t, timeout=15)
        self.assertTrue(closed, "ctxd waited for bytes it already had: %r" % answers[-200:])
        self.assertTrue(answers.startswith(b"HTTP/1.1 200 "), answers[:300])
        self.assertIn(b"HTTP/1.1 201 ", answers)

    def test_large_answer_to_a_slow_reader(self):
        # More than the kernel buffers hold (tcp_wmem tops out at 4 MB), a
        # small receive window and a pause: ctxd's write stops half way and
        # the loop finishes it (SSL_write retried with the same bytes).
        cid, msgs = self.big_context(n=32)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(30)
        s.connect(("127.0.0.1", self.ctxd.port))
        with self.ctx.wrap_socket(s, server_hostname="localhost") as t:
            req = ("GET /mcp/context/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % cid).encode()
            t.sendall(req)
            time.sleep(1.0)
            f = t.makefile("rb")
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += f.read(1)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
            n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                     if ln.lower().startswith(b"content-length:")][0])
            self.assertGreater(n, 6000000)
            body = b""
            while len(body) < n:
                chunk = f.read(min(65536, n - len(body)))
                self.assertTrue(chunk, "connection closed after %d of %d bytes" % (len(body), n))
                body += chunk
            self.assertEqual([m["content"] for m in json.loads(body)["messages"]],
                             [m["content"] for m in msgs])
            # The same connection serves the next request.
            t.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            rest = f.read()
            f.close()
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), rest[:200])

    def test_tls11_refused(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError) as e:
            harness._skip_absent("this Python/OpenSSL cannot make a TLS 1.1 client (%s): "
                                 "TLS 1.1 refusal not checked" % e)
        s = self.raw()
        port = s.getsockname()[1]
        try:
            with self.assertRaises(ssl.SSLError) as cm:
                ctx.wrap_socket(s, server_hostname="localhost")
        finally:
            s.close()
        reason = str(cm.exception)
        if "NO_PROTOCOLS_AVAILABLE" in reason or "no protocols available" in reason:
            harness._skip_absent("the local OpenSSL refuses to offer TLS 1.1 (%s): TLS 1.1 "
                                 "refusal by ctxd not checked" % reason)
        # ctxd, not the client, said no: its log names the handshake.
        wait_until(lambda: "TLS handshake with 127.0.0.1:%d failed" % port in self.ctxd.log(),
                   timeout=5, what="the refused handshake in ctxd's log")
        self.assert_alive()

    def test_plain_http_gets_a_plain_400_and_a_close(self):
        for first in (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                      b"POST /mcp/context HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                      b"Content-Type: application/json\r\n\r\n{}",
                      b"GE"):  # a method still arriving
            with self.subTest(first=first[:20]):
                with self.raw() as s:
                    s.sendall(first)
                    data, closed = read_to_eof(s)
                self.assertTrue(closed, "the connection was left open")
                head, _, body = data.partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 400 "), data[:300])
                lines = [ln.lower() for ln in head.split(b"\r\n")]
                self.assertIn(b"connection: close", lines)
                self.assertIn(b"content-type: application/json", lines)
                j = json.loads(body)
                self.assertEqual(j["code"], "bad_http_request")
                self.assertTrue(j["error"].startswith("This port speaks HTTPS; use https://"), j)
        # http.client (a plain client) sees the same.
        r = harness.request(self.ctxd.port, "GET", "/healthz", timeout=10)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["code"], "bad_http_request")
        self.assert_alive()

    def test_garbage_gets_a_closed_connection(self):
        for junk in (b"\x00\x01\x02\x03garbage\r\n\r\n" * 4, b"hello there\r\n\r\n",
                     b"XYZZY\r\n\r\n", os.urandom(3000),
                     # a one-letter "method" is no HTTP (once drawn by os.urandom)
                     b"N #\xac\xf6V\xbc\xbe+\xe5+'\xc2\xb2\xb5\xec" * 8, b"\x16\x03\x01\xff\xff" + b"A" * 200):
            with self.subTest(junk=junk[:16]):
                with self.raw() as s:
                    s.sendall(junk)
                    data, closed = read_to_eof(s)
                self.assertTrue(closed, "the connection was left open")
                self.assertNotIn(b"HTTP/1.1", data)
        # A handshake that stops half way is closed by the head's time limit.
        with self.raw(timeout=15) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01")
            t0 = time.monotonic()
            data, closed = read_to_eof(s, timeout=12)
        self.assertTrue(closed, "a stalled handshake was left open")
        self.assertLess(time.monotonic() - t0, 8)
        # So is a connection that sends nothing at all.
        with self.raw(timeout=15) as s:
            data, closed = read_to_eof(s, timeout=12)
        self.assertTrue(closed)
        self.assertEqual(data, b"")
        self.assert_alive()

    def test_zz_still_fine_after_all_that(self):
        self.assert_alive()
        cid = self.create()
        r = self.https("POST", "/mcp/context/%s/message" % cid, {"message": "still here"})
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("Sanitizer", self.ctxd.log())


class TlsStartupTest(unittest.TestCase):
    """Bad certificate or key files stop ctxd at start with one line naming
    the setting and the path."""

    @classmethod
    def setUpClass(cls):
        require_tool("openssl", INSTALL)
        cls.dir = tempfile.mkdtemp(prefix="ctxd-tls-")
        cls.cert, cls.key = make_pair(cls.dir, "site")
        _, cls.other_key = make_pair(cls.dir, "other")
        cls.not_pem = os.path.join(cls.dir, "not.pem")
        with open(cls.not_pem, "w") as f:
            f.write("this is not a PEM file\n")
        cls.locked_key = os.path.join(cls.dir, "locked.key")
        openssl("pkey", "-in", cls.key, "-aes256", "-passout", "pass:secret", "-out",
                cls.locked_key)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def run_ctxd(self, cert, key):
        c = Ctxd("redis://127.0.0.1:1/0", env={"CTXD_TLS_CERT": cert, "CTXD_TLS_KEY": key})
        try:
            p = subprocess.run([CTXD_BIN], env=c.env(), capture_output=True, text=True,
                               timeout=20, stdin=subprocess.DEVNULL)
            return p.returncode, p.stdout + p.stderr
        finally:
            c.cleanup()

    def check(self, cert, key, *needles):
        rc, out = self.run_ctxd(cert, key)
        self.assertNotEqual(rc, 0, out)
        self.assertEqual(len(out.strip().splitlines()), 1, out)
        self.assertTrue(out.startswith("ctxd: "), out)
        for n in needles:
            self.assertIn(n, out)
        self.assertNotIn("PRIVATE KEY-----\n", out)  # never key material
        return out

    def test_missing_cert_file(self):
        missing = os.path.join(self.dir, "nowhere.crt")
        self.check(missing, self.key, "CTXD_TLS_CERT=" + missing, "No such file")

    def test_missing_key_file(self):
        missing = os.path.join(self.dir, "nowhere.key")
        self.check(self.cert, missing, "CTXD_TLS_KEY=" + missing, "No such file")

    def test_key_does_not_match_the_certificate(self):
        self.check(self.cert, self.other_key, "CTXD_TLS_KEY=" + self.other_key,
                   "does not match", "CTXD_TLS_CERT=" + self.cert)

    def test_not_pem(self):
        self.check(self.not_pem, self.key, "CTXD_TLS_CERT=" + self.not_pem, "PEM")
        self.check(self.cert, self.not_pem, "CTXD_TLS_KEY=" + self.not_pem, "PEM")
        # A certificate where the key belongs, and the other way round.
        self.check(self.key, self.cert, "CTXD_TLS_CERT=" + self.key, "PEM")
        self.check(self.cert, self.cert, "CTXD_TLS_KEY=" + self.cert, "PEM")

    def test_key_with_a_passphrase_never_prompts(self):
        self.check(self.cert, self.locked_key, "CTXD_TLS_KEY=" + self.locked_key, "passphrase")

    def test_a_directory(self):
        self.check(self.dir, self.key, "CTXD_TLS_CERT=" + self.dir, "not a file")

    def test_only_one_of_the_two(self):
        rc, out = self.run_ctxd(self.cert, "")
        self.assertEqual(rc, 2, out)
        self.assertIn("CTXD_TLS_CERT and CTXD_TLS_KEY go together", out)


if __name__ == "__main__":
    main()
