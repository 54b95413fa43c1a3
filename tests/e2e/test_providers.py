"""The anthropic and openai providers end to end: the real ctxd and a real
redis-server against tests/fakes/fake_upstream.py.

Each test checks three things: what ctxd answered, what it stored in Redis,
and exactly what the fake upstream received (its /_admin/requests log). The
expected replies and token counts are worked out from the recorded requests
with the fake's own reply_for() and tokens(), so they are what the fake really
sent back. One test class per provider; both share ProviderTests.
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

from harness import (SOURCE_DIR, Ctxd, CtxdTestCase, FakeUpstream, free_port, main, request,
                     sse_events)

FAKE = os.path.join(SOURCE_DIR, "tests", "fakes", "fake_upstream.py")
sys.path.insert(0, os.path.dirname(FAKE))
import fake_upstream  # noqa: E402  (reply_for, tokens, error tables: what the fake sends)

MAX_RETRIES = 2
ATTEMPT_TIMEOUT_MS = 1500
DEADLINE_MS = 4000
RETRY_CAP_MS = 1000  # first backoff is 375-500 ms, the second 750-1000 ms
MAX_TOKENS = 321
FAST = {"retry-after-ms": "10"}  # on a failure that will be retried: retry at once

# Short retry policy so that the whole file runs in well under a minute.
COMMON_ENV = {
    "CTXD_UPSTREAM_TIMEOUT_MS": str(ATTEMPT_TIMEOUT_MS),
    "CTXD_UPSTREAM_DEADLINE_MS": str(DEADLINE_MS),
    "CTXD_UPSTREAM_RETRY_CAP_MS": str(RETRY_CAP_MS),
    "CTXD_UPSTREAM_MAX_RETRIES": str(MAX_RETRIES),
    "CTXD_UPSTREAM_CONNECT_TIMEOUT_MS": "1000",
    "CTXD_MAX_TOKENS": str(MAX_TOKENS),
    "CTXD_LOG_LEVEL": "debug",  # the most talkative log must not leak the key either
}


def stream_incrementally(port, cid, message, timeout=30):
    """POST a streamed turn and read the SSE answer line by line as it comes.
    Returns [(seconds since the request was sent, event, data)]."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        t0 = time.monotonic()
        conn.request("POST", "/mcp/context/%s/message" % cid,
                     body=json.dumps({"message": message, "stream": True}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            raise AssertionError("stream answered %d: %r" % (r.status, r.read()))
        out, event = [], "message"
        while True:
            line = r.readline()
            if not line:
                return out
            line = line.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                out.append((time.monotonic() - t0, event, json.loads(line[5:])))
                if event in ("done", "error"):
                    return out
    finally:
        conn.close()


# ---- the shared tests ----

class ProviderTests:
    """Tests for one provider. A subclass (also a CtxdTestCase) sets the class
    attributes and the provider-specific hooks below."""
    PROVIDER = None           # "anthropic" / "openai"
    PREFIX = None             # the fake's reply prefix, e.g. "fake-anthropic"
    PATH = None               # the path ctxd must call on the fake
    KEY = None                # the API key (the fake checks it)
    DEFAULT_MODEL = None      # CTXD_MODEL
    OVERLOADED = ()           # statuses that mean "overloaded" for this provider
    MID_STREAM_ERROR = None   # a stream_error the fake sends after some text

    # -- provider hooks --
    @classmethod
    def provider_env(cls, fake, url=None):
        """ctxd's provider settings: the key, and the fake's URL (or url)."""
        raise NotImplementedError

    def check_headers(self, rec):
        raise NotImplementedError

    def split_wire(self, body):
        """(system prompt or None, conversation messages) of a request body."""
        raise NotImplementedError

    def expected_usage(self, body, text):
        """The usage the fake reported for a request body and its reply text."""
        raise NotImplementedError

    def check_stream_flags(self, body):
        raise NotImplementedError

    def error_message(self, status):
        """The fake's default error message for a status."""
        raise NotImplementedError

    # -- class set-up: the fake first, so ctxd can be pointed at it --
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeUpstream(["--%s-key" % cls.PROVIDER, cls.KEY]).start()
        try:
            cls.CTXD_ENV = dict(COMMON_ENV, CTXD_MODEL=cls.DEFAULT_MODEL,
                                **cls.provider_env(cls.fake))
            super().setUpClass()
        except BaseException:
            cls.fake.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.fake.stop()

    def setUp(self):
        super().setUp()
        self.fake.reset()

    def tearDown(self):
        self.fake.reset()  # no scripted behaviour may leak into the next test
        super().tearDown()

    # -- helpers --
    def stored(self, cid):
        """The context's messages as stored in Redis."""
        return [json.loads(x) for x in self.redis.raw(
            "LRANGE", "ctxd:{%s}:messages" % cid, "0", "-1")]

    def snapshot(self):
        return self.redis.snapshot()

    def assert_no_lock(self, cid):
        self.assertEqual(self.redis.cli("EXISTS", "ctxd:{%s}:lock" % cid), "0")

    def assert_pairs(self, cid, pairs):
        """The stored history is exactly these (user, assistant) pairs."""
        stored = self.stored(cid)
        want = [m for u, a in pairs for m in (("user", u), ("assistant", a))]
        self.assertEqual([(m["role"], m["content"]) for m in stored], want)
        self.assertEqual([m["seq"] for m in stored], list(range(1, len(stored) + 1)))
        return stored

    def model_requests(self, n=None):
        reqs = self.fake.requests()
        for r in reqs:
            self.assertEqual((r["method"], r["path"]), ("POST", self.PATH))
        if n is not None:
            self.assertEqual(len(reqs), n, [r["body"] for r in reqs])
        return reqs

    def reply_to(self, body):
        """The fake's default reply to a recorded request body."""
        system, msgs = self.split_wire(body)
        return fake_upstream.reply_for(self.PREFIX, msgs, system)

    def ok_turn(self, cid, message):
        r = self.turn(cid, message)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def stream_turn(self, cid, message):
        r = self.req("POST", "/mcp/context/%s/message" % cid,
                     {"message": message, "stream": True})
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers["content-type"].startswith("text/event-stream"), r)
        return sse_events(r.body)

    def current_pairs(self, cid):
        """The stored history as (user, assistant) pairs."""
        s = self.stored(cid)
        return [(s[i]["content"], s[i + 1]["content"]) for i in range(0, len(s), 2)]

    def assert_recovers(self, cid, pairs):
        """A normal turn works again and the history stays whole pairs."""
        self.fake.reset()
        j = self.ok_turn(cid, "are you back?")
        rec = self.model_requests(1)[0]
        self.assertEqual(j["ai_response"], self.reply_to(rec["body"]))
        self.assert_pairs(cid, pairs + [("are you back?", j["ai_response"])])
        self.assert_no_lock(cid)

    def assert_failed_cleanly(self, cid, before, r, status, code):
        """ctxd answered status/code, stored nothing, released its lock and
        never echoed the key."""
        j = self.assert_error(r, status, code)
        self.assertNotIn(self.KEY, r.text)
        self.assertEqual(self.snapshot(), before)
        self.assert_no_lock(cid)
        return j

    def conversation(self, system=None, model=None):
        """A context with one finished turn; returns (cid, pairs)."""
        body = {}
        if system:
            body["system"] = system
        if model:
            body["model"] = model
        cid = self.create(body)
        j = self.ok_turn(cid, "first question")
        self.fake.reset()
        return cid, [("first question", j["ai_response"])]

    # ---- 1. the conversation on the wire ----

    def test_three_turns_send_the_whole_history(self):
        system = "You are a travel agent. Be brief."
        cid = self.create({"system": system})
        said = ["Book me a flight to New York", "Make it next Tuesday",
                "A window seat, please"]
        answers = []
        for text in said:
            answers.append(self.ok_turn(cid, text)["ai_response"])
        reqs = self.model_requests(3)
        for i, rec in enumerate(reqs):
            with self.subTest(turn=i + 1):
                self.check_headers(rec)
                body = rec["body"]
                self.assertEqual(body["model"], self.DEFAULT_MODEL)
                self.assertNotIn("stream", body)
                got_system, msgs = self.split_wire(body)
                self.assertEqual(got_system, system)
                want = []
                for u, a in zip(said[:i], answers[:i]):
                    want += [{"role": "user", "content": u},
                             {"role": "assistant", "content": a}]
                want.append({"role": "user", "content": said[i]})
                self.assertEqual(msgs, want)
                # ctxd passed on exactly what the fake replied to this history.
                self.assertEqual(answers[i], self.reply_to(body))
                self.assertIn("#%d to: %s" % (i + 1, said[i]), answers[i])
        self.assert_pairs(cid, list(zip(said, answers)))
        self.assert_no_lock(cid)

    def test_context_model_and_no_system_prompt(self):
        cid = self.create({"model": "ctx-own-model-7"})
        j = self.ok_turn(cid, "hello")
        body = self.model_requests(1)[0]["body"]
        self.assertEqual(body["model"], "ctx-own-model-7")
        system, msgs = self.split_wire(body)
        self.assertIsNone(system)
        self.assertEqual(msgs, [{"role": "user", "content": "hello"}])
        self.assertEqual(j["ai_response"], self.reply_to(body))
        self.assertEqual(self.stored(cid)[1]["model"], "ctx-own-model-7")
        # Another context without a model of its own still gets CTXD_MODEL.
        self.fake.reset()
        self.ok_turn(self.create(), "hello")
        self.assertEqual(self.model_requests(1)[0]["body"]["model"], self.DEFAULT_MODEL)

    # ---- 2. usage ----

    def test_usage_is_what_the_upstream_reported(self):
        cid = self.create({"system": "Count tokens."})
        for text in ("short", "a much longer question " * 20):
            self.fake.reset()
            j = self.ok_turn(cid, text)
            rec = self.model_requests(1)[0]
            want = self.expected_usage(rec["body"], j["ai_response"])
            self.assertEqual(j["usage"], want)
            self.assertEqual(self.stored(cid)[-1]["usage"], want)
            self.assertEqual(self.stored(cid)[-1]["role"], "assistant")

    # ---- 3. retries ----

    def test_retryable_failure_then_success_is_stored_once(self):
        for status in tuple(self.OVERLOADED) + (500,):
            with self.subTest(status=status):
                cid = self.create()
                self.fake.reset()
                self.fake.script({"status": status})
                j = self.ok_turn(cid, "try again for %d" % status)
                reqs = self.model_requests(2)
                self.assertEqual(reqs[0]["body"], reqs[1]["body"])
                self.assertEqual(j["ai_response"], self.reply_to(reqs[1]["body"]))
                self.assert_pairs(cid, [("try again for %d" % status, j["ai_response"])])
                self.assert_no_lock(cid)

    def test_retry_after_ms_is_honoured(self):
        # Backoff would wait 375-500 ms before the first retry: a wait of
        # about 20 ms or of at least 800 ms can only come from the header.
        for ms, low, high in ((20, 0.015, 0.3), (800, 0.79, 1.5)):
            with self.subTest(retry_after_ms=ms):
                cid = self.create()
                self.fake.reset()
                self.fake.script({"status": 429, "headers": {"retry-after-ms": str(ms)}})
                j = self.ok_turn(cid, "rate limited")
                reqs = self.model_requests(2)
                gap = reqs[1]["time"] - reqs[0]["time"]
                self.assertTrue(low <= gap <= high, "waited %.3f s" % gap)
                self.assert_pairs(cid, [("rate limited", j["ai_response"])])

    def test_x_should_retry_overrides_the_status(self):
        cid = self.create()
        before = self.snapshot()
        self.fake.script({"status": self.OVERLOADED[0],
                          "headers": {"x-should-retry": "false"}})
        r = self.turn(cid, "do not retry")
        self.assert_failed_cleanly(cid, before, r, 503, "upstream_overloaded")
        self.model_requests(1)
        self.assertNotIn("retr", r.json()["error"])
        # ...and "true" makes even a 400 worth another attempt.
        self.fake.reset()
        self.fake.script({"status": 400, "headers": {"x-should-retry": "true"}})
        j = self.ok_turn(cid, "retry this one")
        self.model_requests(2)
        self.assert_pairs(cid, [("retry this one", j["ai_response"])])

    # ---- 4. final failures ----

    def test_final_failures_leave_the_context_unchanged(self):
        key_echo = "Incorrect API key provided: %s. Check it." % self.KEY
        cases = [
            # (name, script, requests made, ctxd status, code, Retry-After, error text)
            ("401", [{"status": 401, "message": key_echo}], 1, 502, "upstream_auth",
             None, "HTTP 401"),
            ("403", [{"status": 403}], 1, 502, "upstream_auth", None, "HTTP 403"),
            ("429", [{"status": 429, "headers": FAST}] * MAX_RETRIES
             + [{"status": 429, "headers": {"retry-after": "7"}}],
             1 + MAX_RETRIES, 429, "upstream_rate_limited", "7", "HTTP 429"),
            ("429 without retry-after", [{"status": 429, "headers": FAST}] * MAX_RETRIES
             + [{"status": 429}], 1 + MAX_RETRIES, 429, "upstream_rate_limited", "1",
             "HTTP 429"),
            ("500", [{"status": 500, "headers": FAST}] * (1 + MAX_RETRIES),
             1 + MAX_RETRIES, 502, "upstream_error", None, "HTTP 500"),
            ("400", [{"status": 400, "message": "messages: too long"}], 1, 502,
             "upstream_rejected", None, "messages: too long"),
        ]
        for st in self.OVERLOADED:
            cases.append((str(st), [{"status": st, "headers": FAST}] * MAX_RETRIES
                          + [{"status": st, "headers": {"retry-after": "3"}}],
                          1 + MAX_RETRIES, 503, "upstream_overloaded", "3", "HTTP %d" % st))
        cid, pairs = self.conversation(system="Stay calm.")
        for name, script, n, status, code, retry_after, text in cases:
            with self.subTest(upstream=name):
                self.fake.reset()
                before = self.snapshot()
                self.fake.script(*script)
                r = self.turn(cid, "will this fail?")
                j = self.assert_failed_cleanly(cid, before, r, status, code)
                if retry_after:
                    self.assertEqual(r.headers.get("retry-after"), retry_after)
                self.assertIn(text, j["error"])
                reqs = self.model_requests(n)
                # Every attempt was the same complete request.
                for rec in reqs:
                    self.assertEqual(rec["body"], reqs[0]["body"])
                self.assertEqual(self.split_wire(reqs[0]["body"])[1][-1],
                                 {"role": "user", "content": "will this fail?"})
                if n > 1:
                    self.assertIn("after %d retries" % MAX_RETRIES, j["error"])
                default = self.error_message(int(name.split()[0]))
                if default and name not in ("401", "400"):
                    self.assertIn(default, j["error"])
                if name == "401":
                    self.assertIn("[redacted]", j["error"])
                self.assert_recovers(cid, pairs)
                pairs = self.current_pairs(cid)

    def test_attempt_timeout_is_504(self):
        cid, pairs = self.conversation()
        before = self.snapshot()
        slow = {"delay_ms": ATTEMPT_TIMEOUT_MS + 1000}
        self.fake.script(slow, slow, slow)
        t0 = time.monotonic()
        r = self.turn(cid, "are you there?")
        took = time.monotonic() - t0
        self.assert_failed_cleanly(cid, before, r, 504, "upstream_timeout")
        # Attempts of 1.5 s and backoff: the deadline allows exactly two.
        reqs = self.model_requests(2)
        self.assertGreaterEqual(reqs[1]["time"] - reqs[0]["time"],
                                ATTEMPT_TIMEOUT_MS / 1000.0)
        self.assertLess(took, DEADLINE_MS / 1000.0 + 0.5)
        self.assertGreater(took, 2 * ATTEMPT_TIMEOUT_MS / 1000.0 - 0.1)
        self.assert_recovers(cid, pairs)

    def test_unreachable_upstream_is_502(self):
        cid, pairs = self.conversation()
        before = self.snapshot()
        env = dict(self.CTXD_ENV, **self.provider_env(None, url="http://127.0.0.1:%d"
                                                      % free_port()))
        other = Ctxd(self.redis.url, env=env).start()
        try:
            r = other.request("POST", "/mcp/context/%s/message" % cid,
                              {"message": "anyone home?"})
            j = self.assert_failed_cleanly(cid, before, r, 502, "upstream_unreachable")
            self.assertIn("after %d retries" % MAX_RETRIES, j["error"])
            self.model_requests(0)
            log = other.log()
        finally:
            rc = other.stop()
            other.cleanup()
        self.assertEqual(rc, 0)
        self.assertNotIn(self.KEY, log)
        # The ctxd that can reach the upstream carries on with this context.
        self.assert_recovers(cid, pairs)

    # ---- 5. streaming ----

    def test_streamed_turn_is_stored_with_usage(self):
        cid, pairs = self.conversation(system="Stream it.")
        ev = self.stream_turn(cid, "stream please")
        self.assertGreater(len(ev), 2, ev)
        self.assertTrue(all(e == "delta" for e, _ in ev[:-1]), ev)
        self.assertEqual(ev[-1][0], "done", ev)
        done = ev[-1][1]
        rec = self.model_requests(1)[0]
        self.check_headers(rec)
        self.check_stream_flags(rec["body"])
        text = "".join(d["text"] for _, d in ev[:-1])
        self.assertEqual(text, done["ai_response"])
        self.assertEqual(text, self.reply_to(rec["body"]))
        # The fake streams the reply word by word: as many deltas as words.
        self.assertEqual(len(ev) - 1, len(fake_upstream.pieces(text)))
        self.assertEqual(done["context_id"], cid)
        want = self.expected_usage(rec["body"], text)
        self.assertEqual(done["usage"], want)
        stored = self.assert_pairs(cid, pairs + [("stream please", text)])
        self.assertEqual(stored[-1]["usage"], want)
        self.assert_no_lock(cid)

    def test_stream_error_mid_stream_stores_nothing(self):
        cid, pairs = self.conversation()
        before = self.snapshot()
        self.fake.script({"stream_error": self.MID_STREAM_ERROR, "error_after": 2})
        ev = self.stream_turn(cid, "this will break")
        self.assertEqual([e for e, _ in ev], ["delta", "delta", "error"], ev)
        err = ev[-1][1]
        self.assertEqual((err["code"], err["status"]), ("upstream_error", 502), err)
        self.assertIn(self.MID_STREAM_ERROR["message"], err["error"])
        self.model_requests(1)  # text was already sent on: never retried
        self.assertEqual(self.snapshot(), before)
        self.assert_no_lock(cid)
        self.assert_recovers(cid, pairs)

    def test_cut_stream_stores_nothing(self):
        cid, pairs = self.conversation()
        for cut in ("drop", "clean"):
            with self.subTest(cut=cut):
                self.fake.reset()
                before = self.snapshot()
                self.fake.script({"cut": cut, "cut_after": 2})
                ev = self.stream_turn(cid, "cut me off")
                self.assertEqual([e for e, _ in ev], ["delta", "delta", "error"], ev)
                self.assertEqual(ev[-1][1]["code"], "upstream_error", ev)
                self.assertEqual(ev[-1][1]["status"], 502, ev)
                self.model_requests(1)
                self.assertEqual(self.snapshot(), before)
                self.assert_no_lock(cid)
                self.assert_recovers(cid, pairs)
                pairs = self.current_pairs(cid)

    def test_stream_failing_before_any_text_is_retried(self):
        cid, pairs = self.conversation()
        self.fake.script({"cut": "clean", "cut_after": 0, "headers": FAST})
        ev = self.stream_turn(cid, "second time lucky")
        self.assertEqual(ev[-1][0], "done", ev)
        reqs = self.model_requests(2)
        text = "".join(d["text"] for e, d in ev if e == "delta")
        self.assertEqual(text, self.reply_to(reqs[1]["body"]))
        self.assertEqual(text, ev[-1][1]["ai_response"])
        self.assert_pairs(cid, pairs + [("second time lucky", text)])

    # ---- 6. tokens reach the client as they arrive ----

    def test_deltas_are_passed_on_as_they_arrive(self):
        delay = 0.3
        cid = self.create()
        self.fake.script({"chunk_delay_ms": int(delay * 1000),
                          "reply": "one two three four five"})
        got = stream_incrementally(self.ctxd.port, cid, "slowly please")
        deltas = [t for t, e, _ in got if e == "delta"]
        self.assertEqual(got[-1][1], "done", got)
        self.assertEqual(len(deltas), 5, got)
        total = got[-1][0]
        self.assertLess(deltas[0], total - 2 * delay, got)
        # They came one by one, a chunk delay apart, not in one burst at the end.
        self.assertGreater(deltas[-1] - deltas[0], 4 * delay * 0.7, got)
        self.assertEqual("".join(d["text"] for _, e, d in got if e == "delta"),
                         "one two three four five")
        self.assert_pairs(cid, [("slowly please", "one two three four five")])

    # ---- 7. the key stays secret ----

    def test_key_is_never_logged_nor_stored(self):
        cid = self.create({"system": "secret test"})
        self.ok_turn(cid, "hi")
        self.stream_turn(cid, "hi again")
        self.fake.script({"status": 401, "message": "bad key " + self.KEY})
        self.assertNotIn(self.KEY, self.turn(cid, "and now?").text)
        self.fake.script({"status": 400, "error_body": "rejected: " + self.KEY})
        self.assertNotIn(self.KEY, self.turn(cid, "and now?").text)
        for rec in self.model_requests(4):
            self.check_headers(rec)  # the key really was in use
        self.assertNotIn(self.KEY, self.ctxd.log())
        self.assertIn("model call failed", self.ctxd.log())
        for k, v in self.snapshot().items():
            self.assertNotIn(self.KEY, k)
            self.assertNotIn(self.KEY, json.dumps(v), k)

    def leaked_prefix(self, text):
        """The longest start of the key (16 characters or more) found in text."""
        for n in range(len(self.KEY), 15, -1):
            if self.KEY[:n] in text:
                return self.KEY[:n]
        return None

    # A key echoed across the point where an error message is cut must not
    # leak in part: the key is removed from the full text before any cut.
    def test_key_echoed_in_a_long_error_does_not_leak_partly(self):
        cid = self.create()
        leaks = []
        for pad in range(120, 200, 7):
            self.fake.reset()
            self.fake.script({"status": 401, "message": "x" * pad + " " + self.KEY})
            r = self.turn(cid, "hi")
            self.assert_error(r, 502, "upstream_auth")
            if self.leaked_prefix(r.text):
                leaks.append((pad, self.leaked_prefix(r.text)))
        in_log = self.leaked_prefix(self.ctxd.log())
        self.assertEqual((leaks, in_log), ([], None),
                         "pieces of the key reached the client (pad, piece) / the log")


# ---- the providers ----

class AnthropicTest(ProviderTests, CtxdTestCase):
    PROVIDER = "anthropic"
    PREFIX = "fake-anthropic"
    PATH = "/v1/messages"
    KEY = "sk-ant-e2e-" + uuid.uuid4().hex
    DEFAULT_MODEL = "claude-e2e-default"
    OVERLOADED = (529, 503)
    MID_STREAM_ERROR = {"type": "api_error", "message": "Internal server error mid-stream"}

    @classmethod
    def provider_env(cls, fake, url=None):
        return {"CTXD_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": cls.KEY,
                "CTXD_ANTHROPIC_URL": url or fake.url}

    def check_headers(self, rec):
        h = rec["headers"]
        self.assertEqual(h.get("x-api-key"), self.KEY)
        self.assertEqual(h.get("anthropic-version"), "2023-06-01")
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        self.assertNotIn("authorization", h)

    def split_wire(self, body):
        self.assertIsInstance(body["max_tokens"], int)
        self.assertEqual(body["max_tokens"], MAX_TOKENS)
        for m in body["messages"]:
            self.assertEqual(set(m), {"role", "content"})
            self.assertIn(m["role"], ("user", "assistant"))  # never "system"
        return body.get("system"), body["messages"]

    def expected_usage(self, body, text):
        system = body.get("system") or ""
        return {"input_tokens": fake_upstream.tokens(json.dumps(body["messages"]) + system),
                "output_tokens": fake_upstream.tokens(text)}

    def check_stream_flags(self, body):
        self.assertIs(body.get("stream"), True)
        self.assertEqual(self.fake.requests()[-1]["headers"].get("accept"),
                         "text/event-stream")

    def error_message(self, status):
        return fake_upstream.ANTHROPIC_ERRORS.get(status, (None, None))[1]

    def test_overloaded_event_before_text_is_retried(self):
        cid = self.create()
        self.fake.script({"stream_error": {"type": "overloaded_error", "message": "Overloaded"},
                          "error_after": 0})
        ev = self.stream_turn(cid, "overloaded first")
        self.assertEqual(ev[-1][0], "done", ev)
        self.assertNotIn("error", [e for e, _ in ev])
        reqs = self.model_requests(2)
        self.assertEqual(ev[-1][1]["ai_response"], self.reply_to(reqs[1]["body"]))
        self.assert_pairs(cid, [("overloaded first", ev[-1][1]["ai_response"])])


class OpenAITest(ProviderTests, CtxdTestCase):
    PROVIDER = "openai"
    PREFIX = "fake-openai"
    PATH = "/v1/chat/completions"
    KEY = "sk-proj-e2e-" + uuid.uuid4().hex
    DEFAULT_MODEL = "gpt-e2e-default"
    OVERLOADED = (503, 529)
    MID_STREAM_ERROR = {"type": "server_error", "message": "The server broke mid-stream"}

    @classmethod
    def provider_env(cls, fake, url=None):
        return {"CTXD_PROVIDER": "openai", "OPENAI_API_KEY": cls.KEY,
                "CTXD_OPENAI_URL": url or fake.url + "/v1"}

    def check_headers(self, rec):
        h = rec["headers"]
        self.assertEqual(h.get("authorization"), "Bearer " + self.KEY)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        self.assertNotIn("x-api-key", h)

    def split_wire(self, body):
        # Not api.openai.com: the limit goes as max_tokens.
        self.assertEqual(body.get("max_tokens"), MAX_TOKENS)
        self.assertNotIn("max_completion_tokens", body)
        msgs = body["messages"]
        system = None
        if msgs and msgs[0]["role"] == "system":
            system = msgs[0]["content"]
            msgs = msgs[1:]
        for m in msgs:
            self.assertEqual(set(m), {"role", "content"})
            self.assertIn(m["role"], ("user", "assistant"))  # system only first
        return system, msgs

    def expected_usage(self, body, text):
        return {"input_tokens": fake_upstream.tokens(json.dumps(body["messages"])),
                "output_tokens": fake_upstream.tokens(text)}

    def check_stream_flags(self, body):
        self.assertIs(body.get("stream"), True)
        self.assertEqual(body.get("stream_options"), {"include_usage": True})

    def error_message(self, status):
        return fake_upstream.OPENAI_ERRORS.get(status, (None, None, None))[2]

    def test_stream_without_done_but_finished_is_complete(self):
        cid, pairs = self.conversation()
        self.fake.script({"no_done": True})
        ev = self.stream_turn(cid, "no done marker")
        self.assertEqual(ev[-1][0], "done", ev)
        rec = self.model_requests(1)[0]
        text = "".join(d["text"] for e, d in ev if e == "delta")
        self.assertEqual(text, self.reply_to(rec["body"]))
        want = self.expected_usage(rec["body"], text)
        self.assertEqual(ev[-1][1]["usage"], want)
        stored = self.assert_pairs(cid, pairs + [("no done marker", text)])
        self.assertEqual(stored[-1]["usage"], want)

    def test_stream_without_usage_stores_unknown_counts(self):
        cid = self.create()
        self.fake.script({"no_usage": True})
        ev = self.stream_turn(cid, "no usage please")
        self.assertEqual(ev[-1][0], "done", ev)
        self.assertEqual(ev[-1][1]["usage"], {"input_tokens": None, "output_tokens": None})
        self.assertEqual(self.stored(cid)[-1]["usage"],
                         {"input_tokens": None, "output_tokens": None})


if __name__ == "__main__":
    main()
