"""Long conversations: token budgets, windowing, incremental summaries, trimming,
expiry and listing, against real Redis, real ctxd and the fake upstream."""
import json
import os
import re
import sys
import threading
import time
import unittest
import uuid

from harness import SOURCE_DIR, Ctxd, CtxdTestCase, FakeUpstream, Redis, main, request

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "fakes"))
from fake_upstream import reply_for  # noqa: E402  the fake's own reply rule

SUMMARY_SYSTEM_PREFIX = "You maintain a running summary"


def stored(redis, cid):
    return [json.loads(x) for x in redis.raw("LRANGE", "ctxd:{%s}:messages" % cid, "0", "-1") if x]


META_FIELDS = ("summary", "summary_upto", "summary_tokens", "strategy", "max_context_tokens",
               "system", "ttl_seconds", "max_messages", "next_seq", "first_seq")


def meta(redis, cid):
    """Meta fields one by one (values may span lines)."""
    out = {}
    for f in META_FIELDS:
        v = "\n".join(redis.raw("HGET", "ctxd:{%s}:meta" % cid, f))
        out[f] = v
    return out


def command_calls(redis):
    """Calls per command so far (INFO commandstats, summed over a cluster's masters)."""
    out = {}
    for line in redis.cli("INFO", "commandstats").splitlines():
        m = re.match(r"^cmdstat_([a-z|]+):calls=([0-9.e+]+)", line)
        if m:
            out[m.group(1)] = int(float(m.group(2)))
    return out


def folded_seqs(call):
    """The seqs a summary call folds in: lines after 'New messages:' only
    (the current summary above may quote earlier ones)."""
    text = call["messages"][0]["content"]
    new = text.rsplit("\n\nNew messages:\n", 1)[1]
    return [int(line.split("]")[0][5:]) for line in new.split("\n") if line.startswith("[seq ")]


def expected_window(msgs, budget, new_text, system="", summary_tokens=0):
    """The newest whole units (a user message and what follows it) whose
    stored token counts fit the budget: an independent statement of the rule."""
    left = budget - (len(new_text.encode()) // 4 + 4) - len(system.encode()) // 4 - summary_tokens
    units, cur = [], []
    for m in reversed(msgs):
        cur.insert(0, m)
        if m["role"] == "user":
            units.append(cur)
            cur = []
    if cur:
        units.append(cur)
    window, total = [], 0
    for u in units:
        t = sum(m["tokens"] for m in u)
        if total + t > left:
            break
        total += t
        window = u + window
    return window


class FakeTestCase(unittest.TestCase):
    """Redis, the fake upstream and ctxd with the Anthropic provider."""
    ENV = {}

    def setUp(self):
        self.redis = Redis().start()
        self.fake = FakeUpstream()
        env = {"CTXD_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": "test-key",
               "CTXD_ANTHROPIC_URL": self.fake.url, "CTXD_UPSTREAM_MAX_RETRIES": "0"}
        env.update(self.ENV)
        self.ctxd = Ctxd(self.redis.url, env=env).start()

    def tearDown(self):
        try:
            self.assertEqual(self.ctxd.stop(), 0)
        finally:
            self.ctxd.cleanup()
            self.fake.stop()
            self.redis.cleanup()

    def req(self, method, path, body=None, headers=None):
        return self.ctxd.request(method, path, body, headers)

    def create(self, body):
        r = self.req("POST", "/mcp/context", body)
        self.assertEqual(r.status, 201, r)
        return r.json()["context_id"]

    def turn(self, cid, text):
        return self.req("POST", "/mcp/context/%s/message" % cid, {"message": text})

    def model_calls(self, summaries=False):
        """Recorded /v1/messages bodies: turns, or summary folds."""
        out = []
        for r in self.fake.requests():
            b = r["body"]
            if r["path"] != "/v1/messages" or not isinstance(b, dict):
                continue
            is_summary = str(b.get("system", "")).startswith(SUMMARY_SYSTEM_PREFIX)
            if is_summary == summaries:
                out.append(b)
        return out


class WindowTest(FakeTestCase):
    def test_window_sends_the_newest_whole_pairs_that_fit(self):
        budget = 400
        cid = self.create({"strategy": "window", "max_context_tokens": budget,
                           "system": "Be brief."})
        sent_counts = []
        for i in range(12):
            text = "turn %d: %s" % (i, "words " * (3 + (i * 7) % 20))
            want = expected_window(stored(self.redis, cid), budget, text, "Be brief.")
            r = self.turn(cid, text)
            self.assertEqual(r.status, 200, r)
            sent = self.model_calls()[-1]
            self.assertEqual(sent["system"], "Be brief.")
            got = [(m["role"], m["content"]) for m in sent["messages"]]
            self.assertEqual(got, [(m["role"], m["content"]) for m in want] + [("user", text)])
            roles = [m["role"] for m in sent["messages"]]
            self.assertEqual(roles, ["user", "assistant"] * (len(roles) // 2) + ["user"])
            sent_counts.append(len(want))
        # The window really slid: later turns send fewer than all messages.
        self.assertLess(sent_counts[-1], 22)
        self.assertGreater(max(sent_counts), 0)
        self.assertEqual(len(stored(self.redis, cid)), 24)  # raw history kept

    def test_all_over_budget_is_413_before_calling_the_model(self):
        cid = self.create({"strategy": "all", "max_context_tokens": 300})
        status = []
        for i in range(10):
            calls = len(self.model_calls())
            before = self.redis.raw("LRANGE", "ctxd:{%s}:messages" % cid, "0", "-1")
            r = self.turn(cid, "message number %d with some padding text" % i)
            status.append(r.status)
            if r.status == 413:
                self.assertEqual(r.json()["code"], "prompt_too_large")
                self.assertIn("max_context_tokens", r.json()["error"])
                self.assertEqual(len(self.model_calls()), calls)  # never sent
                self.assertEqual(self.redis.raw("LRANGE", "ctxd:{%s}:messages" % cid, "0", "-1"),
                                 before)
                break
            self.assertEqual(len(self.model_calls()[-1]["messages"]), 2 * i + 1)
        self.assertEqual(status[-1], 413, status)
        # Switching strategy lets the conversation go on.
        r = self.req("PATCH", "/mcp/context/" + cid, {"strategy": "window"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["strategy"], "window")
        self.assertEqual(self.turn(cid, "and now?").status, 200)

    def test_exact_token_counts_from_usage(self):
        cid = self.create({"strategy": "window", "max_context_tokens": 100000})
        for i in range(4):
            self.assertEqual(self.turn(cid, "question %d %s" % (i, "x" * (10 * i))).status, 200)
        msgs = stored(self.redis, cid)
        calls = self.model_calls()
        for m in msgs:
            if m["role"] == "assistant":
                self.assertEqual(m["tokens"], m["usage"]["output_tokens"])
        # Each prompt = the previous prompt + the reply + the new message, so
        # the stored counts add up to what the upstream counted.
        for k in range(1, 4):
            prompt_k = msgs[2 * k + 1]["usage"]["input_tokens"]
            prompt_prev = msgs[2 * k - 1]["usage"]["input_tokens"]
            self.assertEqual(prompt_k, prompt_prev + msgs[2 * k - 1]["tokens"] + msgs[2 * k]["tokens"])
        self.assertEqual(len(calls), 4)


class SummaryTest(FakeTestCase):
    def summary_calls(self):
        return self.model_calls(summaries=True)

    def test_summaries_are_incremental_and_travel_in_the_system_prompt(self):
        cid = self.create({"strategy": "summarize", "max_context_tokens": 350,
                           "system": "You book flights."})
        folded = []
        for i in range(14):
            r = self.turn(cid, "request %d: %s" % (i, "detail " * 6))
            self.assertEqual(r.status, 200, r)
        calls = self.summary_calls()
        self.assertGreaterEqual(len(calls), 2, "expected several folds")
        previous = None
        for c in calls:
            text = c["messages"][0]["content"]
            self.assertEqual(len(c["messages"]), 1)
            # Each call carries the previous summary and only new messages.
            if previous is None:
                self.assertIn("Current summary:\n(none)", text)
            else:
                self.assertIn("Current summary:\n" + previous, text)
            seqs = folded_seqs(c)
            self.assertTrue(seqs, text)
            self.assertEqual(seqs, sorted(seqs))
            self.assertFalse(set(seqs) & set(folded), "folded twice: %s" % seqs)
            folded += seqs
            previous = reply_for("fake-anthropic", c["messages"], c["system"])
        self.assertEqual(folded, list(range(1, len(folded) + 1)))  # nothing skipped
        g = self.req("GET", "/mcp/context/" + cid).json()
        self.assertEqual(g["strategy"], "summarize")
        self.assertEqual(g["summary"]["covers_until_seq"], folded[-1])
        self.assertEqual(g["summary"]["text"], meta(self.redis, cid)["summary"])
        self.assertEqual(len(g["messages"]), 28)  # raw history is never deleted
        last_turn = self.model_calls()[-1]
        self.assertTrue(last_turn["system"].startswith("You book flights.\n\nSummary of the "
                                                       "earlier conversation:\n"))
        self.assertIn(g["summary"]["text"], last_turn["system"])
        # Survives a restart of ctxd.
        self.ctxd.stop()
        self.ctxd = Ctxd(self.redis.url, env=self.ctxd.extra_env, port=self.ctxd.port).start()
        g2 = self.req("GET", "/mcp/context/" + cid).json()
        self.assertEqual(g2["summary"], g["summary"])

    def test_long_summaries_never_lock_the_context(self):
        # A model that honours max_tokens but writes summaries as long as it
        # may: each fold feeds the previous summary back in. With ~70-token
        # messages and a budget of 600 this answered 413 prompt_too_large on
        # every turn from the seventh on.
        self.fake.mode(long_summaries=True)
        budget = 600
        cid = self.create({"strategy": "summarize", "max_context_tokens": budget})
        for i in range(50):
            text = "turn %d: %s" % (i, "some words about flights " * 10)
            r = self.turn(cid, text)
            self.assertEqual(r.status, 200, "turn %d: %r" % (i, r))
        folds = self.summary_calls()
        self.assertGreaterEqual(len(folds), 5, "expected many folds")
        share = (budget - (len(text.encode()) // 4 + 4)) // 2
        for c in folds:
            # Each fold may write at most the summary's share of the budget.
            self.assertLessEqual(c["max_tokens"], share, c["max_tokens"])
        m = meta(self.redis, cid)
        self.assertLessEqual(int(m["summary_tokens"]), share)
        # The turns sent the summary and a window within the budget.
        for call in self.model_calls()[-10:]:
            sent = len(json.dumps(call["messages"]).encode()) // 4 + len(call.get("system", "")) // 4
            self.assertLess(sent, budget * 1.5, call)

    def test_a_summary_longer_than_its_share_is_shortened_or_cut(self):
        budget = 600
        cid = self.create({"strategy": "summarize", "max_context_tokens": budget})
        self.assertEqual(self.turn(cid, "hello").status, 200)
        # A summary of 0.4 (or from a model that ignored max_tokens): far
        # over its share of the budget.
        long = "The user travels a lot. " * 400
        # It covers both stored messages: nothing to fold, only to shorten.
        self.redis.cli("HSET", "ctxd:{%s}:meta" % cid, "summary", long, "summary_tokens",
                       str(len(long) // 4), "summary_upto", "2")
        text = "where next?"
        share = (budget - (len(text.encode()) // 4 + 4)) // 2
        self.fake.mode(long_summaries=True)
        r = self.turn(cid, text)
        self.assertEqual(r.status, 200, r)
        shorten = [c for c in self.summary_calls()
                   if "The summary is too long" in c["messages"][0]["content"]]
        self.assertEqual(len(shorten), 1, [c["messages"][0]["content"][-200:]
                                           for c in self.summary_calls()])
        self.assertLessEqual(shorten[0]["max_tokens"], share)
        self.assertLessEqual(int(meta(self.redis, cid)["summary_tokens"]), share)
        # A model that writes past max_tokens: the summary is cut in the
        # prompt instead of refusing the turn.
        self.fake.mode(long_summaries=False)
        # Both shortening calls a turn may make ignore their max_tokens.
        self.fake.script({"reply": long}, {"reply": long})
        self.redis.cli("HSET", "ctxd:{%s}:meta" % cid, "summary", long, "summary_tokens",
                       str(len(long) // 4))
        r = self.turn(cid, text)
        self.assertEqual(r.status, 200, r)
        last = self.model_calls()[-1]
        self.assertLessEqual(len(last["system"]) // 4, budget)
        self.assertIn("Summary of the earlier conversation:\nThe user travels a lot.",
                      last["system"])

    def test_failed_summary_never_loses_the_turn(self):
        cid = self.create({"strategy": "summarize", "max_context_tokens": 300})
        i = 0
        while not meta(self.redis, cid).get("summary") and i < 30:
            before = meta(self.redis, cid).get("summary_upto")
            # Fail the next call if it is a fold; a turn call would take it
            # too, so fail only when the window is about to drop messages.
            msgs = stored(self.redis, cid)
            text = "turn %d %s" % (i, "pad " * 8)
            drops = len(expected_window(msgs, 300, text)) < len(msgs)
            if drops and not getattr(self, "_failed", False):
                self.fake.script({"status": 500, "headers": {"x-should-retry": "false"}})
                self._failed = True
                r = self.turn(cid, text)
                self.assertEqual(r.status, 200, r)  # the turn survived
                self.assertEqual(meta(self.redis, cid).get("summary_upto"), before)
                self.assertEqual(stored(self.redis, cid)[-2]["content"], text)
                self.assertIn("summary call failed", self.ctxd.log())
            else:
                self.assertEqual(self.turn(cid, text).status, 200)
            i += 1
        self.assertTrue(getattr(self, "_failed", False))
        self.assertTrue(meta(self.redis, cid).get("summary"), "a later turn folded")
        first = self.summary_calls()[0]["messages"][0]["content"]
        self.assertIn("[seq 1] user: turn 0", first)  # the failed fold was retried


class SummaryModelTest(FakeTestCase):
    ENV = {"CTXD_SUMMARY_MODEL": "claude-haiku-4-5", "CTXD_MODEL": "claude-sonnet-4-5"}

    def test_summary_folds_use_their_own_model(self):
        cid = self.create({"strategy": "summarize", "max_context_tokens": 300})
        for i in range(10):
            self.assertEqual(self.turn(cid, "turn %d %s" % (i, "pad " * 8)).status, 200)
        folds = self.model_calls(summaries=True)
        turns = self.model_calls()
        self.assertTrue(folds)
        self.assertEqual({c["model"] for c in folds}, {"claude-haiku-4-5"})
        self.assertEqual({c["model"] for c in turns}, {"claude-sonnet-4-5"})


class TwoProcessSummaryTest(FakeTestCase):
    def test_two_processes_never_fold_the_same_turns(self):
        other = Ctxd(self.redis.url, env=self.ctxd.extra_env).start()
        try:
            cid = self.create({"strategy": "summarize", "max_context_tokens": 300})
            errors = []

            def client(port, k):
                for i in range(6):
                    r = request(port, "POST", "/mcp/context/%s/message" % cid,
                                {"message": "p%d-%d %s" % (port, i, "pad " * 6)}, timeout=60)
                    if r.status != 200:
                        errors.append(r)
            threads = [threading.Thread(target=client, args=(p, k))
                       for k, p in enumerate([self.ctxd.port, other.port] * 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            seen = []
            for c in self.model_calls(summaries=True):
                seen += folded_seqs(c)
            self.assertTrue(seen)
            self.assertEqual(len(seen), len(set(seen)), "a message was folded twice")
            self.assertEqual(len(stored(self.redis, cid)), 48)
        finally:
            self.assertEqual(other.stop(), 0)
            other.cleanup()


class EchoLimitsTest(CtxdTestCase):
    CTXD_ENV = {"CTXD_MAX_MESSAGES": "50"}

    def test_echo_summarizes_offline_and_deterministically(self):
        cid = self.create({"strategy": "summarize", "max_context_tokens": 260})
        for i in range(8):
            self.assertEqual(self.turn(cid, "fact %d: the sky is %d" % (i, i)).status, 200)
        s = self.req("GET", "/mcp/context/" + cid).json()["summary"]
        self.assertIsNotNone(s)
        self.assertIn("[seq 1] user: fact 0: the sky is 0", s["text"])
        self.assertEqual(self.redis.cli("HGET", "ctxd:{%s}:meta" % cid, "summary"), s["text"])

    def test_max_messages_trims_oldest_whole_pairs(self):
        cid = self.create({"max_messages": 5})
        for i in range(5):
            self.assertEqual(self.turn(cid, "t%d" % i).status, 200)
        msgs = stored(self.redis, cid)
        self.assertEqual([m["seq"] for m in msgs], [7, 8, 9, 10])  # 5 would split a pair
        self.assertEqual(msgs[0]["role"], "user")
        g = self.req("GET", "/mcp/context/" + cid).json()
        self.assertEqual(g["first_seq"], 7)
        self.assertEqual(g["message_count"], 4)
        # Turns go on past the global cap when the context trims.
        for i in range(30):
            self.assertEqual(self.turn(cid, "more %d" % i).status, 200)
        self.assertEqual(len(stored(self.redis, cid)), 4)

    def test_a_turn_runs_no_script_in_redis(self):
        """The common turn takes the lock and reads in one round trip and appends in one
        MULTI/EXEC that WATCH guards (store_watch.c): no Lua runs in Redis, and what it
        stores is what the script would (trimmed whole pairs, seqs, version)."""
        cid = self.create({"max_messages": 5})
        before = command_calls(self.redis)
        for i in range(10):
            self.assertEqual(self.turn(cid, "t%d" % i).status, 200)
        after = command_calls(self.redis)
        ran = {c: after.get(c, 0) - before.get(c, 0) for c in after}
        self.assertEqual(ran.get("evalsha", 0) + ran.get("eval", 0), 0, ran)
        self.assertGreaterEqual(ran.get("exec", 0), 10, ran)
        self.assertEqual([m["seq"] for m in stored(self.redis, cid)], [17, 18, 19, 20])
        m = meta(self.redis, cid)
        self.assertEqual((m["next_seq"], m["first_seq"]), ("21", "17"))
        g = self.req("GET", "/mcp/context/" + cid)
        self.assertEqual(g.headers.get("etag"), '"11"')  # created at 1, one more per turn

    def test_patch_validates_and_changes_nothing_on_error(self):
        cid = self.create()
        m0 = meta(self.redis, cid)
        for body in ({"strategy": "best"}, {"max_context_tokens": 5}, {"max_messages": 1},
                     {"ttl_seconds": -3}, {"bogus": 1}, {"system": 3}):
            with self.subTest(body=body):
                self.assertEqual(self.req("PATCH", "/mcp/context/" + cid, body).status, 400)
        self.assertEqual(meta(self.redis, cid), m0)
        self.assert_error(self.req("PATCH", "/mcp/context/" + str(uuid.uuid4()),
                                   {"strategy": "window"}), 404, "context_not_found")
        r = self.req("PATCH", "/mcp/context/" + cid,
                     {"strategy": "summarize", "max_context_tokens": 4000, "system": "S",
                      "ttl_seconds": 600})
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual((j["strategy"], j["max_context_tokens"], j["system"], j["ttl_seconds"]),
                         ("summarize", 4000, "S", 600))
        self.assertGreater(int(self.redis.cli("TTL", "ctxd:{%s}:meta" % cid)), 590)
        self.req("PATCH", "/mcp/context/" + cid, {"ttl_seconds": 0})
        self.assertEqual(self.redis.cli("TTL", "ctxd:{%s}:meta" % cid), "-1")

    def test_messages_route_pages_back(self):
        cid = self.create()
        for i in range(5):
            self.turn(cid, "q%d" % i)
        p = self.req("GET", "/mcp/context/%s/messages?limit=4" % cid).json()
        self.assertEqual([m["seq"] for m in p["messages"]], [7, 8, 9, 10])
        self.assertEqual(p["next_before"], 7)
        p = self.req("GET", "/mcp/context/%s/messages?limit=4&before=7" % cid).json()
        self.assertEqual([m["seq"] for m in p["messages"]], [3, 4, 5, 6])
        p = self.req("GET", "/mcp/context/%s/messages?before=3" % cid).json()
        self.assertEqual([m["seq"] for m in p["messages"]], [1, 2])
        self.assertFalse(p["has_more"])


class ExpiryTest(CtxdTestCase):
    CTXD_ENV = {"CTXD_DEFAULT_TTL": "2"}

    def test_keys_expire_together_and_writes_refresh(self):
        a = self.create()  # default ttl 2 s
        b = self.create({"ttl_seconds": 0})  # never
        self.turn(a, "hello")
        self.assertTrue(0 < int(self.redis.cli("TTL", "ctxd:{%s}:messages" % a)) <= 2)
        self.assertEqual(self.redis.cli("TTL", "ctxd:{%s}:meta" % b), "-1")
        time.sleep(1.2)
        self.req("PATCH", "/mcp/context/%s/state" % a, {"k": 1})  # a write refreshes
        self.req("GET", "/mcp/context/" + a)  # a read does not
        time.sleep(1.2)
        self.assertEqual(self.req("GET", "/mcp/context/" + a).status, 200)
        time.sleep(2.2)
        self.assert_error(self.req("GET", "/mcp/context/" + a), 404, "context_not_found")
        self.assertEqual(self.redis.keys("ctxd:{%s}:*" % a), [])
        ids = [c["id"] for c in self.req("GET", "/mcp/contexts?limit=100").json()["contexts"]]
        self.assertNotIn(a, ids)
        self.assertIn(b, ids)


class ListingTest(CtxdTestCase):
    def page_all(self, limit):
        out, cursor = [], None
        while True:
            q = "/mcp/contexts?limit=%d" % limit + ("&cursor=" + cursor if cursor else "")
            r = self.req("GET", q)
            self.assertEqual(r.status, 200, r)
            j = r.json()
            out += j["contexts"]
            cursor = j["next_cursor"]
            if not cursor:
                return out

    def test_listing_orders_by_activity_and_pages_stably(self):
        ids = [self.create() for _ in range(7)]
        self.turn(ids[2], "hello")  # most recent activity now
        listed = self.page_all(3)
        got = [c["id"] for c in listed if c["id"] in ids]
        self.assertEqual(got[0], ids[2])
        self.assertEqual(sorted(got), sorted(ids))
        top = [c for c in listed if c["id"] == ids[2]][0]
        self.assertEqual(top["message_count"], 2)
        self.assertEqual(top["preview"]["role"], "assistant")
        self.assertEqual(top["preview"]["text"], "Hello there! How can I help you today?")
        stamps = [c["last_updated"] for c in listed]
        self.assertEqual(stamps, sorted(stamps, reverse=True))
        for q in ("limit=0", "cursor=abc", "cursor=12-x", "sort=asc"):
            self.assert_error(self.req("GET", "/mcp/contexts?" + q), 400, "invalid_query")

    def test_paging_while_others_are_created_and_deleted(self):
        stable = [self.create() for _ in range(30)]
        doomed = stable[5:10]
        seen, cursor, new, pages = [], None, [], 0
        while True:
            q = "/mcp/contexts?limit=4" + ("&cursor=" + cursor if cursor else "")
            j = self.req("GET", q).json()
            seen += [c["id"] for c in j["contexts"]]
            pages += 1
            if pages == 2:  # churn in the middle of the walk
                for d in doomed:
                    self.req("DELETE", "/mcp/context/" + d)
                new += [self.create() for _ in range(5)]
            cursor = j["next_cursor"]
            if not cursor:
                break
        self.assertEqual(len(seen), len(set(seen)), "a context was listed twice")
        untouched = [c for c in stable if c not in doomed]
        for c in untouched:
            self.assertIn(c, seen)  # nothing that stayed put was skipped
        late = [d for d in doomed if d in seen[8:]]
        self.assertEqual(late, [], "deleted contexts appeared after their deletion")
        after = [c["id"] for c in self.page_all(50)]
        for d in doomed:
            self.assertNotIn(d, after)
        for n in new:
            self.assertIn(n, after)


if __name__ == "__main__":
    main()
