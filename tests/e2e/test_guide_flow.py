"""The classic guide's Python client flow, unchanged, against two ctxd
processes on one Redis; contexts survive restarts of ctxd and of Redis."""
import unittest

import requests

from harness import Ctxd, Redis, main


class GuideFlowTest(unittest.TestCase):
    def setUp(self):
        self.redis = Redis().start()
        self.a = Ctxd(self.redis.url).start()
        self.b = Ctxd(self.redis.url).start()

    def tearDown(self):
        for c in (self.a, self.b):
            c.cleanup()
        self.redis.cleanup()

    def test_flow_across_two_processes(self):
        # The guide's snippet, with base_url alternating between processes.
        base_a = self.a.base + "/mcp"
        base_b = self.b.base + "/mcp"
        response = requests.post(f"{base_a}/context")
        context_id = response.json()['context_id']
        self.assertEqual(response.status_code, 201)

        message1 = {"message": "Can you book me a flight to New York?"}
        response = requests.post(f"{base_b}/context/{context_id}/message", json=message1)
        self.assertEqual(response.status_code, 200)
        self.assertIn("Can you book me a flight to New York?", response.json()['ai_response'])

        message2 = {"message": "Make it for next Tuesday and I prefer a window seat."}
        response = requests.post(f"{base_a}/context/{context_id}/message", json=message2)
        self.assertEqual(response.json()['ai_response'],
                         "Got it, a flight for next Tuesday. Any specific time or airline?")

        response = requests.get(f"{base_b}/context/{context_id}")
        msgs = [(m['role'], m['content']) for m in response.json()['messages']]
        self.assertEqual([r for r, _ in msgs], ["user", "assistant", "user", "assistant"])
        self.assertEqual(msgs[0][1], message1["message"])
        self.assertEqual(msgs[2][1], message2["message"])

        # kill -9 one process and start it again: the context is still there.
        self.a.kill()
        self.a = Ctxd(self.redis.url, port=self.a.port).start()
        self.assertEqual(len(requests.get(f"{base_a}/context/{context_id}").json()['messages']), 4)

        # Restart Redis (AOF on): still there, through both processes.
        self.redis.stop()
        self.redis.start()
        for base in (base_a, base_b):
            r = requests.get(f"{base}/context/{context_id}")
            self.assertEqual(r.status_code, 200, r.text)
            self.assertEqual(len(r.json()['messages']), 4)

        response = requests.delete(f"{base_b}/context/{context_id}")
        self.assertEqual(response.json(), {"message": f"Context '{context_id}' deleted"})
        self.assertEqual(requests.get(f"{base_a}/context/{context_id}").status_code, 404)
        self.assertEqual(self.a.stop(), 0)
        self.assertEqual(self.b.stop(), 0)


if __name__ == "__main__":
    main()
