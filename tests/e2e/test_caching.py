"""Prompt caching with the Anthropic provider (CTXD_PROMPT_CACHE=on):
cache_control breakpoints on the system prompt and on the history before
the new message stay put from one turn to the next, so each turn reads the
prefix the one before wrote; the cache usage comes back in the turn's usage
and is stored with the reply."""
import copy
import re
import unittest

from harness import Ctxd, FakeUpstream, Redis, main

TOOLS = [{"name": "lookup", "input_schema": {"type": "object"}}]


def strip(blocks):
    """Messages without their cache_control (what stays the same)."""
    out = copy.deepcopy(blocks)
    for m in out:
        if isinstance(m.get("content"), list):
            for b in m["content"]:
                b.pop("cache_control", None)
            if len(m["content"]) == 1 and m["content"][0].get("type") == "text" and \
                    set(m["content"][0]) == {"type", "text"}:
                m["content"] = m["content"][0]["text"]
    return out


def marks(body):
    n = sum(1 for t in body.get("tools") or [] if "cache_control" in t)
    n += sum(1 for b in body["system"] if "cache_control" in b) \
        if isinstance(body.get("system"), list) else 0
    for m in body["messages"]:
        if isinstance(m["content"], list):
            n += sum(1 for b in m["content"] if "cache_control" in b)
    return n


class CachingTest(unittest.TestCase):
    def setUp(self):
        self.redis = Redis().start()
        self.fake = FakeUpstream()
        self.ctxd = Ctxd(self.redis.url, env={
            "CTXD_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "test-key",
            "CTXD_ANTHROPIC_URL": self.fake.url, "CTXD_PROMPT_CACHE": "on"}).start()

    def tearDown(self):
        try:
            self.assertEqual(self.ctxd.stop(), 0)
        finally:
            self.ctxd.cleanup()
            self.fake.stop()
            self.redis.cleanup()

    def test_breakpoints_stay_put_and_the_cache_is_read(self):
        r = self.ctxd.request("POST", "/mcp/context", {"system": "You are a travel agent. " * 20})
        cid = r.json()["context_id"]
        bodies, usages = [], []
        for i in range(5):
            r = self.ctxd.request("POST", "/mcp/context/%s/message" % cid,
                                  {"message": "turn %d: %s" % (i, "where to go " * 10),
                                   "tools": TOOLS})
            self.assertEqual(r.status, 200, r)
            usages.append(r.json()["usage"])
            bodies.append(self.fake.requests()[-1]["body"])
        for k, body in enumerate(bodies):
            # The system prompt and the tools carry a breakpoint each, the
            # history before the new message one more: at most 4 in all.
            self.assertEqual(body["system"][0]["cache_control"], {"type": "ephemeral"})
            self.assertEqual(body["tools"][-1]["cache_control"], {"type": "ephemeral"})
            self.assertLessEqual(marks(body), 4)
            self.assertNotIn("cache_control", str(body["messages"][-1]))
            if k:
                before = body["messages"][-2]
                self.assertEqual(before["content"][-1]["cache_control"], {"type": "ephemeral"})
                # What turn k-1 sent is the start of what turn k sends.
                prev = bodies[k - 1]["messages"]
                self.assertEqual(strip(body["messages"][:len(prev)]), strip(prev))
                self.assertEqual(body["system"], bodies[k - 1]["system"])
        self.assertGreater(usages[0]["cache_creation_input_tokens"], 0, usages[0])
        self.assertNotIn("cache_read_input_tokens", usages[0])
        for u in usages[1:]:
            # The prefix the turn before wrote is read back.
            self.assertGreater(u["cache_read_input_tokens"], 0, u)
        # Stored with the reply.
        msgs = self.ctxd.request("GET", "/mcp/context/%s/messages" % cid).json()["messages"]
        self.assertEqual(msgs[-1]["usage"]["cache_read_input_tokens"],
                         usages[-1]["cache_read_input_tokens"])
        # The stored history has no cache_control: it is only on the wire.
        self.assertNotIn("cache_control", str(msgs))

    def test_token_counts_take_the_whole_prompt(self):
        """Anthropic's input_tokens leaves out what the cache wrote and read:
        a user message's exact count is the whole prompt now minus the whole
        prompt before minus the reply in between, and the OpenAI drop-in's
        prompt_tokens holds its cached_tokens, and ctxd_tokens_total's input
        counts every prompt whole."""
        def input_tokens_metric():
            text = self.ctxd.request("GET", "/metrics").text
            m = re.search(r'^ctxd_tokens_total\{provider="anthropic",direction="input"\} (\d+)$',
                          text, re.M)
            return int(m.group(1)) if m else 0
        metric_before = input_tokens_metric()
        cid = self.ctxd.request("POST", "/mcp/context", {"system": "Plan trips."}).json()["context_id"]
        whole = []
        for i in range(4):
            r = self.ctxd.request("POST", "/mcp/context/%s/message" % cid,
                                  {"message": "turn %d: %s" % (i, "a fairly long question " * (3 + i))})
            self.assertEqual(r.status, 200, r)
            u = r.json()["usage"]
            whole.append(u["input_tokens"] + u.get("cache_creation_input_tokens", 0) +
                         u.get("cache_read_input_tokens", 0))
            if i:
                self.assertGreater(u.get("cache_read_input_tokens", 0), 0, u)
        self.assertEqual(input_tokens_metric() - metric_before, sum(whole))
        msgs = self.ctxd.request("GET", "/mcp/context/%s/messages" % cid).json()["messages"]
        for k in range(1, 4):
            user, reply_before = msgs[2 * k], msgs[2 * k - 1]
            self.assertEqual(user["role"], "user")
            self.assertEqual(user["tokens"], whole[k] - whole[k - 1] - reply_before["tokens"],
                             (k, whole, [m["tokens"] for m in msgs]))
        # The OpenAI shape on the same Anthropic upstream.
        body = {"model": "m", "messages": [{"role": "user", "content": "hello " * 40}]}
        r = self.ctxd.request("POST", "/v1/chat/completions", body)
        self.assertEqual(r.status, 200, r)
        cid = r.headers["ctxd-context-id"]
        for text in ("and again " * 10, "once more " * 10):  # the second reads the first's prefix
            body["messages"] = [{"role": "user", "content": text}]
            r = self.ctxd.request("POST", "/v1/chat/completions", body,
                                  headers={"ctxd-context-id": cid})
            self.assertEqual(r.status, 200, r)
        u = r.json()["usage"]
        cached = u["prompt_tokens_details"]["cached_tokens"]
        self.assertGreater(cached, 0, u)
        self.assertLess(cached, u["prompt_tokens"], u)
        self.assertEqual(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"], u)
        sent = self.fake.requests()[-1]["body"]
        self.assertTrue(any("cache_control" in str(m) for m in sent["messages"]), sent)

    def test_a_window_slides_in_steps(self):
        r = self.ctxd.request("POST", "/mcp/context", {"strategy": "window",
                                                       "max_context_tokens": 700,
                                                       "system": "Be brief."})
        cid = r.json()["context_id"]
        starts, reads = [], 0
        for i in range(16):
            r = self.ctxd.request("POST", "/mcp/context/%s/message" % cid,
                                  {"message": "turn %d: %s" % (i, "words " * 20)})
            self.assertEqual(r.status, 200, r)
            body = self.fake.requests()[-1]["body"]
            first = body["messages"][0]["content"]
            starts.append(first if isinstance(first, str) else first[0]["text"])
            reads += r.json()["usage"].get("cache_read_input_tokens", 0) > 0
            # Within the budget, by the same estimate the window uses.
            self.assertLessEqual(sum(len(str(m["content"])) // 4 + 4 for m in body["messages"]),
                                 700 * 1.2)
        moves = sum(1 for a, b in zip(starts, starts[1:]) if a != b)
        self.assertGreater(moves, 0, "the window never had to move")
        # A window sliding by one pair would move on every turn once full.
        self.assertLessEqual(moves, 5, starts)
        self.assertGreaterEqual(reads, 10, "turns that read the cache")


if __name__ == "__main__":
    main()
