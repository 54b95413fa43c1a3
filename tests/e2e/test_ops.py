"""Operations: Prometheus metrics, JSON/logfmt logs with request ids, graceful
shutdown during a streamed turn, SIGHUP log reopening."""
import http.client
import json
import os
import re
import signal
import tempfile
import threading
import time
import unittest

from harness import Ctxd, CtxdTestCase, Redis, main, wait_until

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_metrics(text):
    """Strict parse of the Prometheus text format 0.0.4: every line is a
    comment (HELP/TYPE) or a sample; returns {(name, frozenset(labels)): value}
    and {name: type}."""
    samples, types = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, "bad sample line: %r" % line
        labels = {}
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = LABEL.match(rest, pos)
                assert lm, "bad labels in %r" % line
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        key = (m.group(1), frozenset(labels.items()))
        assert key not in samples, "duplicate sample %r" % line
        samples[key] = float(m.group(4))
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class MetricsTest(CtxdTestCase):
    CTXD_ENV = {"CTXD_LOCK_WAIT_MS": "100"}

    def scrape(self):
        r = self.req("GET", "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers["content-type"].startswith("text/plain; version=0.0.4"))
        return parse_metrics(r.text)

    def test_exposition_is_well_formed(self):
        self.req("GET", "/healthz")
        samples, types = self.scrape()
        self.assertEqual(value(samples, "ctxd_build_info", version=self.req(
            "GET", "/healthz").json()["version"]), 1)
        for name, kind in types.items():
            if kind != "histogram":
                continue
            series = {}
            for (n, labels), v in samples.items():
                if n == name + "_bucket":
                    rest = frozenset(l for l in labels if l[0] != "le")
                    le = dict(labels)["le"]
                    series.setdefault(rest, []).append((float("inf") if le == "+Inf" else float(le), v))
            for rest, buckets in series.items():
                buckets.sort()
                counts = [v for _, v in buckets]
                self.assertEqual(counts, sorted(counts), (name, rest))  # cumulative
                self.assertEqual(buckets[-1][0], float("inf"))
                self.assertEqual(counts[-1], samples[(name + "_count", rest)])

    def test_counters_move(self):
        before, _ = self.scrape()
        cid = self.create()
        self.assertEqual(self.turn(cid, "hello").status, 200)
        self.turn(cid, "")  # 400
        self.req("GET", "/no/such/route")
        self.redis.cli("SET", "ctxd:{%s}:lock" % cid, "x", "PX", "3000")
        self.assertEqual(self.turn(cid, "busy?").status, 409)
        after, _ = self.scrape()
        route = "/mcp/context/{id}/message"
        self.assertEqual(value(after, "ctxd_http_requests_total", method="POST", route=route, status="200")
                         - value(before, "ctxd_http_requests_total", method="POST", route=route, status="200"), 1)
        self.assertEqual(value(after, "ctxd_http_requests_total", method="POST", route=route, status="400")
                         - value(before, "ctxd_http_requests_total", method="POST", route=route, status="400"), 1)
        self.assertEqual(value(after, "ctxd_http_requests_total", method="", route="unmatched", status="404")
                         - value(before, "ctxd_http_requests_total", method="", route="unmatched", status="404"), 1)
        self.assertEqual(value(after, "ctxd_upstream_calls_total", provider="echo", status="none", outcome="ok")
                         - value(before, "ctxd_upstream_calls_total", provider="echo", status="none", outcome="ok"), 1)
        self.assertGreater(value(after, "ctxd_tokens_total", provider="echo", direction="output"),
                           value(before, "ctxd_tokens_total", provider="echo", direction="output"))
        self.assertEqual(value(after, "ctxd_lock_busy_total") - value(before, "ctxd_lock_busy_total"), 1)
        self.assertGreaterEqual(value(after, "ctxd_http_requests_in_flight"), 1)  # the scrape itself
        # The histogram counts a request once its answer is sent: the last
        # may land just after the scrape.
        h = "ctxd_http_request_duration_seconds_count"
        wait_until(lambda: value(self.scrape()[0], h, method="POST", route=route)
                   - value(before, h, method="POST", route=route) >= 3, timeout=5,
                   what="three turns in the duration histogram")

    def test_redis_errors_are_counted(self):
        before, _ = self.scrape()
        other = Ctxd("redis://127.0.0.1:1/0").start()
        try:
            other.request("POST", "/mcp/context")
            samples, _ = parse_metrics(other.request("GET", "/metrics").text)
            self.assertGreaterEqual(value(samples, "ctxd_redis_errors_total"), 1)
        finally:
            other.cleanup()


class LogTest(unittest.TestCase):
    def setUp(self):
        self.redis = Redis().start()

    def tearDown(self):
        self.redis.cleanup()

    def run_ctxd(self, env):
        c = Ctxd(self.redis.url, env=env).start()
        cid = c.request("POST", "/mcp/context").json()["context_id"]
        r = c.request("POST", "/mcp/context/%s/message" % cid,
                      {"message": "my card is SECRET-BODY-4242"},
                      headers={"X-Request-Id": "req-abc-1"})
        self.assertEqual(r.headers["x-request-id"], "req-abc-1")
        self.assertEqual(c.stop(), 0)
        log = c.log()
        c.cleanup()
        self.assertNotIn("SECRET-BODY-4242", log)  # bodies stay out of the log
        return log

    def test_json_lines_with_request_ids(self):
        log = self.run_ctxd({})
        lines = [json.loads(l) for l in log.splitlines() if l.strip()]
        start = [l for l in lines if "listening on" in l["msg"]][0]
        self.assertRegex(start["msg"], r"ctxd \d+\.\d+\.\d+ listening on http://127\.0\.0\.1:\d+ "
                                       r"redis=127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+)* db=0 provider=echo")
        reqs = [l for l in lines if l["msg"] == "request"]
        turn = [l for l in reqs if l["request_id"] == "req-abc-1"][0]
        self.assertEqual((turn["method"], turn["route"], turn["status"], turn["level"]),
                         ("POST", "/mcp/context/{id}/message", 200, "info"))
        self.assertIsInstance(turn["ms"], float)
        made = [l for l in reqs if l["route"] == "/mcp/context"][0]
        self.assertRegex(made["request_id"], r"^[0-9a-f]{32}$")
        self.assertFalse([l for l in reqs if l["route"] == "/healthz"])  # probes at debug

    def test_logfmt(self):
        log = self.run_ctxd({"CTXD_LOG_FORMAT": "logfmt"})
        line = [l for l in log.splitlines() if 'request_id="req-abc-1"' in l][0]
        self.assertRegex(line, r'^ts=\S+ level=info msg="request" method="POST" '
                               r'path="/mcp/context/[0-9a-f-]+/message" route="/mcp/context/\{id\}/message" '
                               r'status=200 ms=[0-9.]+ request_id="req-abc-1"$')

    def test_sighup_reopens_the_log_file(self):
        d = tempfile.mkdtemp()
        path = os.path.join(d, "ctxd.log")
        c = Ctxd(self.redis.url, env={"CTXD_LOG_FILE": path}).start()
        try:
            c.request("POST", "/mcp/context")
            os.rename(path, path + ".1")  # what logrotate does
            c.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: os.path.exists(path), what="new log file")
            c.request("POST", "/mcp/context", headers={"X-Request-Id": "after-hup"})
            wait_until(lambda: "after-hup" in open(path).read(), what="line in new file")
            self.assertNotIn("after-hup", open(path + ".1").read())
            self.assertEqual(c.stop(), 0)
        finally:
            c.cleanup()


def start_stream(c):
    """Create a context on c and start a streamed turn on it; returns the
    context id, the connection and the response (headers read)."""
    cid = c.request("POST", "/mcp/context").json()["context_id"]
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=20)
    conn.request("POST", "/mcp/context/%s/message" % cid,
                 body=json.dumps({"message": "hello", "stream": True}),
                 headers={"Content-Type": "application/json"})
    return cid, conn, conn.getresponse()


class ShutdownTest(unittest.TestCase):
    def test_sigterm_lets_a_streaming_turn_finish_and_store(self):
        redis = Redis().start()
        c = Ctxd(redis.url, env={"CTXD_ECHO_DELAY_MS": "1500"}).start()
        try:
            cid, conn, resp = start_stream(c)
            first = resp.readline()  # the stream has started
            self.assertTrue(first.startswith(b"event: delta"), first)
            keep = http.client.HTTPConnection("127.0.0.1", c.port, timeout=20)
            keep.request("GET", "/healthz")
            keep.getresponse().read()
            # A request counts as in flight until its worker is done with it,
            # just after the answer is sent: only the stream is left.
            time.sleep(0.3)
            c.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            # Draining: new connections are refused (a load balancer retries
            # them elsewhere); on open ones, probes say not ready and new work
            # is turned away.
            with self.assertRaises(ConnectionError):  # refused, or reset if queued
                c.request("GET", "/healthz", timeout=5)
            keep.request("GET", "/readyz")
            r = keep.getresponse()
            self.assertEqual((r.status, json.loads(r.read())["code"]), (503, "shutting_down"))
            keep.request("POST", "/mcp/context")
            r = keep.getresponse()
            r.read()
            self.assertEqual(r.status, 503)
            keep.close()
            rest = resp.read().decode()
            self.assertIn("event: done", rest)
            done = json.loads(rest.split("event: done\ndata: ")[1].split("\n")[0])
            self.assertEqual(done["ai_response"], "Hello there! How can I help you today?")
            self.assertEqual(c.proc.wait(timeout=20), 0)
            self.assertEqual(redis.cli("LLEN", "ctxd:{%s}:messages" % cid), "2")
            self.assertIn("draining 1 request(s)", c.log())
        finally:
            c.cleanup()
            redis.cleanup()

    def test_client_leaving_mid_stream_still_stores_the_turn(self):
        redis = Redis().start()
        c = Ctxd(redis.url, env={"CTXD_ECHO_DELAY_MS": "1200"}).start()
        try:
            cid, conn, resp = start_stream(c)
            self.assertTrue(resp.readline().startswith(b"event: delta"))
            conn.sock.close()  # the client goes away mid-stream
            conn.close()
            wait_until(lambda: redis.cli("LLEN", "ctxd:{%s}:messages" % cid) == "2",
                       timeout=10, what="the turn stored after the client left")
            msgs = c.request("GET", "/mcp/context/" + cid).json()["messages"]
            self.assertEqual(msgs[1]["content"], "Hello there! How can I help you today?")
            wait_until(lambda: "client left mid-stream" in c.log(), what="the log line")
            self.assertEqual(c.stop(), 0)
        finally:
            c.cleanup()
            redis.cleanup()

    def test_grace_period_bounds_the_wait(self):
        redis = Redis().start()
        c = Ctxd(redis.url, env={"CTXD_ECHO_DELAY_MS": "8000",
                                 "CTXD_SHUTDOWN_GRACE_MS": "500"}).start()
        try:
            cid = c.request("POST", "/mcp/context").json()["context_id"]
            t = threading.Thread(target=lambda: c.request(
                "POST", "/mcp/context/%s/message" % cid, {"message": "slow"}, timeout=20))
            t.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            c.proc.send_signal(signal.SIGTERM)
            self.assertEqual(c.proc.wait(timeout=10), 0)
            self.assertLess(time.monotonic() - t0, 3)
            self.assertIn("grace period over", c.log())
            self.assertEqual(redis.cli("LLEN", "ctxd:{%s}:messages" % cid), "0")  # nothing half-stored
            t.join()
        finally:
            c.cleanup()
            redis.cleanup()


if __name__ == "__main__":
    main()
