"""Start-up errors: bad settings, the guides' port 619009, an address in use."""
import socket
import subprocess
import unittest

from harness import CTXD_BIN, Ctxd, Redis, free_port, main


def run(env=None, args=None):
    c = Ctxd("redis://127.0.0.1:1/0", env=env, args=args)
    try:
        p = subprocess.run([CTXD_BIN] + (args or []), env=c.env(), capture_output=True,
                           text=True, timeout=20)
        return p.returncode, p.stdout + p.stderr
    finally:
        c.cleanup()


class StartupTest(unittest.TestCase):
    def test_port_619009_is_refused_with_advice(self):
        rc, out = run({"CTXD_LISTEN": "127.0.0.1:619009"})
        self.assertEqual(rc, 2)
        self.assertIn("CTXD_LISTEN=127.0.0.1:619009", out)
        self.assertIn("65535", out)
        self.assertIn("61909", out)
        self.assertEqual(len(out.strip().splitlines()), 1, out)

    def test_port_619009_as_a_flag(self):
        rc, out = run(args=["--listen", "localhost:619009"])
        self.assertEqual(rc, 2)
        self.assertIn("--listen", out)
        self.assertIn("65535", out)

    def test_bad_settings_name_setting_value_and_allowed(self):
        cases = [
            ({"CTXD_LISTEN": "61909"}, "HOST:PORT"),
            ({"CTXD_LISTEN": "127.0.0.1:0"}, "65535"),
            ({"CTXD_LISTEN": "::1:61909"}, "IPv4"),
            ({"CTXD_THREADS": "0"}, "CTXD_THREADS=0"),
            ({"CTXD_THREADS": "many"}, "CTXD_THREADS=many"),
            ({"CTXD_LOG_LEVEL": "loud"}, "debug, info, warn or error"),
            ({"CTXD_REDIS_URL": "http://x"}, "redis://"),
            ({"CTXD_REDIS_URL": "redis://h:99999/0"}, "65535"),
            ({"CTXD_PROVIDER": "gpt"}, "echo, anthropic or openai"),
            ({"CTXD_PROVIDER": "anthropic"}, "ANTHROPIC_API_KEY"),
            ({"CTXD_MAX_BODY_BYTES": "1"}, "CTXD_MAX_BODY_BYTES=1"),
        ]
        for env, needle in cases:
            with self.subTest(env=env):
                rc, out = run(env)
                self.assertEqual(rc, 2, out)
                self.assertIn(needle, out)
                self.assertTrue(out.startswith("ctxd: "), out)
        rc, out = run(args=["--bogus"])
        self.assertEqual(rc, 2)
        self.assertIn("unknown argument '--bogus'", out)

    def test_address_in_use(self):
        port = free_port()
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
            rc, out = run({"CTXD_LISTEN": "127.0.0.1:%d" % port})
        self.assertNotEqual(rc, 0)
        self.assertIn("127.0.0.1:%d" % port, out)
        self.assertIn("in use", out)
        self.assertIn("ss -ltnp 'sport = :%d'" % port, out)

    def test_help_lists_every_setting(self):
        rc, out = run(args=["--help"])
        self.assertEqual(rc, 0)
        for name in ("CTXD_LISTEN", "CTXD_REDIS_URL", "CTXD_THREADS", "CTXD_LOG_LEVEL",
                     "CTXD_PROVIDER", "CTXD_MAX_BODY_BYTES", "CTXD_MAX_MESSAGE_BYTES",
                     "CTXD_MAX_MESSAGES", "CTXD_MAX_STATE_BYTES", "--listen"):
            self.assertIn(name, out)
        rc, out = run(args=["--version"])
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^ctxd \d+\.\d+\.\d+")

    def test_empty_variables_mean_unset_as_compose_passes_them(self):
        # docker-compose.yml passes ${CTXD_PROVIDER:-} and friends through.
        redis = Redis().start()
        c = Ctxd(redis.url, env={"CTXD_PROVIDER": "", "CTXD_MODEL": "", "ANTHROPIC_API_KEY": "",
                                 "OPENAI_API_KEY": "", "CTXD_LOG_LEVEL": ""})
        try:
            c.start()
            self.assertIn("provider=echo model=echo", c.log())
            self.assertEqual(c.stop(), 0)
        finally:
            c.cleanup()
            redis.cleanup()

    def test_flag_overrides_environment_and_startup_line(self):
        redis = Redis().start()
        port = free_port()
        c = Ctxd(redis.url, env={"CTXD_LISTEN": "127.0.0.1:1"},
                 args=["--listen", "127.0.0.1:%d" % port], port=port)
        try:
            c.start()
            self.assertIn("listening on http://127.0.0.1:%d redis=127.0.0.1:%d" % (port, redis.port),
                          c.log())
            self.assertIn("provider=echo", c.log())
            self.assertEqual(c.stop(), 0)
        finally:
            c.cleanup()
            redis.cleanup()


if __name__ == "__main__":
    main()
