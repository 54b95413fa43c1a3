"""The README matches the code: settings, routes, error codes and the messages
its troubleshooting table quotes."""
# e2e_cluster: no (reads the docs and the binary's --help; starts no Redis)
import os
import re
import subprocess
import unittest

from harness import CTXD_BIN, SOURCE_DIR, error_table, main


def read(*parts):
    with open(os.path.join(SOURCE_DIR, *parts)) as f:
        return f.read()


def sources():
    """Every C source under src/, as paths relative to the checkout."""
    out = []
    for d, _, files in os.walk(os.path.join(SOURCE_DIR, "src")):
        out += [os.path.relpath(os.path.join(d, f), SOURCE_DIR) for f in files if f.endswith(".c")]
    return sorted(out)


def run_ctxd(env, args=()):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CTXD_")}
    e.update(env)
    p = subprocess.run([CTXD_BIN] + list(args), env=e, capture_output=True, text=True,
                       timeout=20)
    return p.stdout + p.stderr


def help_settings(text):
    """{variable: its description line} from ctxd --help, whose settings read
    '  --flag   VARIABLE' then the description on the next line."""
    return dict(re.findall(r"^ +--[a-z0-9-]+ +([A-Z][A-Z0-9_]+) *\n +(\S[^\n]*)$", text, re.M))


def settings_rows(table):
    """[(variables, default cell)] of the README's settings table, the cell
    stripped; one row may name several variables."""
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`((?:CTXD|ANTHROPIC|OPENAI)_[A-Z0-9_]+)`", cells[0])
        if len(cells) >= 3 and names:
            rows.append((names, cells[1]))
    return rows


class ReadmeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.readme = read("README.md")
        cls.help = run_ctxd({}, ["--help"])

    def test_settings_table_matches_help(self):
        in_help = set(re.findall(r"\b(?:CTXD|ANTHROPIC|OPENAI)_[A-Z0-9_]+", self.help))
        table = self.readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
        in_table = set(re.findall(r"`((?:CTXD|ANTHROPIC|OPENAI)_[A-Z0-9_]+)`", table))
        self.assertEqual(sorted(in_help - in_table), [], "settings missing from the README")
        self.assertEqual(sorted(in_table - in_help), [], "README settings ctxd does not know")
        # Defaults agree, row by row: a value in the README's default column
        # (a number or `code`) is the [default ...] --help prints for every
        # setting of the row; prose there ("see below", "stderr", or nothing)
        # is only for a setting whose --help line gives no [default ...].
        described = help_settings(self.help)
        self.assertTrue(described, "no settings parsed from ctxd --help:\n" + self.help)
        rows = settings_rows(table)
        self.assertEqual(sorted(n for names, _ in rows for n in names if n in described),
                         sorted(described), "settings --help lists that have no README row")
        for names, cell in rows:
            value = re.fullmatch(r"`([^`]+)`|([0-9]+)", cell)
            for name in names:
                m = re.search(r"\[default ([^\]]+)\]\s*$", described.get(name, ""))
                with self.subTest(setting=name):
                    if value:
                        self.assertTrue(m, "README gives %s the default %s, ctxd --help gives "
                                        "it none: %r" % (name, cell, described.get(name)))
                        self.assertEqual(value.group(1) or value.group(2), m.group(1),
                                         "README vs ctxd --help default of " + name)
                    else:
                        self.assertIsNone(m and m.group(1), "ctxd --help gives %s a default, "
                                          "the README %r" % (name, cell))

    def test_every_route_is_documented(self):
        routes = set()
        for f in sources():
            routes |= set(re.findall(r'http_route\("([A-Z]+)", "([^"]+)"', read(f)))
        for method, path in routes:
            self.assertRegex(self.readme, r"`%s %s" % (method, re.escape(path)),
                             "%s %s is not in the README's API table" % (method, path))

    def test_every_error_code_is_documented(self):
        codes = set(error_table())
        self.assertTrue(codes)
        for c in sorted(codes):
            self.assertTrue("`%s`" % c in self.readme, "error code %s is not documented" % c)

    def test_troubleshooting_quotes_real_messages(self):
        out = run_ctxd({"CTXD_LISTEN": "127.0.0.1:619009"}).strip()
        self.assertTrue(out in self.readme, out)
        out = run_ctxd({"CTXD_THREADS": "0"}).strip()
        self.assertTrue(out in self.readme, out)

    def test_the_two_commands(self):
        self.assertIn("scripts/run.sh      #", self.readme)
        self.assertIn("scripts/test.sh     #", self.readme)
        self.assertIn("exec scripts/test.sh", read(".ci", "run"))


if __name__ == "__main__":
    main()
