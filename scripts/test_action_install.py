#!/usr/bin/env python3
"""Tests of the composite action's shell logic (action.yml), run by
scripts/check-release.sh.

The steps of action.yml run here as the runner would run them: `bash -e` on
the step's `run:` text with the step's `env:` (expressions replaced by what
the runner would substitute), RUNNER_OS / RUNNER_ARCH / RUNNER_TOOL_CACHE set,
and a real HTTP server on 127.0.0.1 serving fake release assets in the
layout of a GitHub release (BASE/VERSION/ASSET). The pins come from running
scripts/pin-action-checksums.sh on a copy of action.yml with a checksum file
written here, so the pinning script is exercised too.
"""

import hashlib
import http.server
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION = "v9.8.7"
X86 = "attestation-broker-x86_64-unknown-linux-musl"
ARM = "attestation-broker-aarch64-unknown-linux-musl"
# A stand-in for the release binary: prints its arguments, one per line.
FAKE_BINARY = b'#!/bin/sh\necho "fake-broker $0"\nfor a in "$@"; do echo "arg: $a"; done\n'
FAKE_ARM_BINARY = FAKE_BINARY + b"# aarch64\n"


class Server:
    """http.server on 127.0.0.1:0 serving a directory, counting GETs per path."""

    def __init__(self, root: pathlib.Path):
        self.hits: dict[str, int] = {}
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                hits[self.path] = hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def step(action: dict, step_id: str) -> dict:
    return next(s for s in action["runs"]["steps"] if s.get("id") == step_id)


class ActionInstallTest(unittest.TestCase):
    def setUp(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="action-test-"))
        self.addCleanup(shutil.rmtree, self.tmp)
        releases = self.tmp / "releases" / VERSION
        releases.mkdir(parents=True)
        (releases / X86).write_bytes(FAKE_BINARY)
        (releases / ARM).write_bytes(FAKE_ARM_BINARY)
        sums = self.tmp / "SHA256SUMS"
        sums.write_text(
            f"{hashlib.sha256(FAKE_BINARY).hexdigest()}  {X86}\n"
            f"{hashlib.sha256(FAKE_ARM_BINARY).hexdigest()}  {ARM}\n"
            f"{'0' * 64}  {X86}.debug\n"
        )
        self.action_path = self.tmp / "action.yml"
        shutil.copy(ROOT / "action.yml", self.action_path)
        pin = subprocess.run(
            [str(ROOT / "scripts" / "pin-action-checksums.sh"), VERSION, str(sums), str(self.action_path)],
            capture_output=True, text=True, check=False)
        self.assertEqual(pin.returncode, 0, pin.stderr)
        self.action = yaml.safe_load(self.action_path.read_text())
        self.server = Server(self.tmp / "releases")
        self.addCleanup(self.server.close)
        self.cache = self.tmp / "toolcache"
        self.cache.mkdir()

    def run_install(self, os_name="Linux", arch="X64", **overrides):
        install = step(self.action, "install")
        env = {k: v for k, v in install["env"].items() if "${{" not in str(v)}
        env.update({
            "PATH": os.environ["PATH"],
            "AB_RELEASE_BASE_URL": self.server.url,
            "GITHUB_ACTION_PATH": str(ROOT),
            "GITHUB_OUTPUT": str(self.tmp / "output"),
            "RUNNER_OS": os_name,
            "RUNNER_ARCH": arch,
            "RUNNER_TOOL_CACHE": str(self.cache),
            "RUNNER_TEMP": str(self.tmp),
        })
        env.update(overrides)
        (self.tmp / "output").write_text("")
        result = subprocess.run(["bash", "-e", "-c", install["run"]], env=env,
                                capture_output=True, text=True, check=False, timeout=120)
        return result, (self.tmp / "output").read_text()

    def cached(self, arch_dir="x86_64") -> pathlib.Path:
        return self.cache / "attestation-broker" / VERSION / arch_dir / "attestation-broker"

    def test_pin_script_rewrites_only_the_three_pinned_lines(self):
        before = (ROOT / "action.yml").read_text().splitlines()
        after = self.action_path.read_text().splitlines()
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        self.assertEqual(len(before), len(after))
        self.assertEqual(sorted(b.split(":")[0].strip() for _, b in changed),
                         ["AB_SHA256_AARCH64", "AB_SHA256_X86_64", "AB_VERSION"])
        env = step(self.action, "install")["env"]
        self.assertEqual(env["AB_VERSION"], VERSION)
        self.assertEqual(env["AB_SHA256_X86_64"], hashlib.sha256(FAKE_BINARY).hexdigest())
        self.assertEqual(env["AB_SHA256_AARCH64"], hashlib.sha256(FAKE_ARM_BINARY).hexdigest())

    def test_pin_script_refuses_a_checksum_file_without_both_binaries(self):
        sums = self.tmp / "partial"
        sums.write_text(f"{hashlib.sha256(FAKE_BINARY).hexdigest()}  {X86}\n")
        original = self.action_path.read_text()
        result = subprocess.run(
            [str(ROOT / "scripts" / "pin-action-checksums.sh"), "v1.0.0", str(sums), str(self.action_path)],
            capture_output=True, text=True, check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(ARM, result.stderr)
        self.assertEqual(self.action_path.read_text(), original)

    def test_checksum_match_installs_into_the_tool_cache(self):
        result, output = self.run_install()
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        binary = self.cached()
        self.assertEqual(binary.read_bytes(), FAKE_BINARY)
        self.assertTrue(binary.stat().st_mode & stat.S_IXUSR)
        self.assertTrue((binary.parent.parent / "x86_64.complete").exists())
        self.assertEqual(output, f"path={binary}\n")
        self.assertEqual(self.server.hits, {f"/{VERSION}/{X86}": 1})
        self.assertIn("SHA-256 verified", result.stdout)

    def test_second_run_uses_the_cache_without_downloading(self):
        first, _ = self.run_install()
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        second, output = self.run_install()
        self.assertEqual(second.returncode, 0, second.stdout + second.stderr)
        self.assertIn("using the tool cache", second.stdout)
        self.assertEqual(output, f"path={self.cached()}\n")
        self.assertEqual(self.server.hits, {f"/{VERSION}/{X86}": 1})

    def test_arm64_runner_gets_the_aarch64_binary(self):
        result, output = self.run_install(arch="ARM64")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(self.cached("aarch64").read_bytes(), FAKE_ARM_BINARY)
        self.assertEqual(self.server.hits, {f"/{VERSION}/{ARM}": 1})

    def test_checksum_mismatch_fails_and_installs_nothing(self):
        (self.tmp / "releases" / VERSION / X86).write_bytes(FAKE_BINARY + b"# tampered\n")
        result, output = self.run_install()
        self.assertEqual(result.returncode, 1)
        self.assertIn("::error title=attestation-broker install::checksum mismatch", result.stdout)
        self.assertIn("pinned in action.yml", result.stdout)
        self.assertFalse(self.cached().exists())
        self.assertFalse((self.cached().parent.parent / "x86_64.complete").exists())
        self.assertEqual(output, "")

    def test_a_changed_cached_binary_is_downloaded_again(self):
        first, _ = self.run_install()
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        self.cached().write_bytes(b"#!/bin/sh\necho replaced\n")
        second, _ = self.run_install()
        self.assertEqual(second.returncode, 0, second.stdout + second.stderr)
        self.assertIn("does not match the pinned SHA-256", second.stdout)
        self.assertEqual(self.cached().read_bytes(), FAKE_BINARY)
        self.assertEqual(self.server.hits, {f"/{VERSION}/{X86}": 2})

    def test_unsupported_platforms_fail_clearly_without_downloading(self):
        for os_name, arch in (("macOS", "ARM64"), ("macOS", "X64"), ("Windows", "X64"),
                              ("Linux", "X86"), ("Linux", "ARM")):
            with self.subTest(platform=f"{os_name}/{arch}"):
                result, output = self.run_install(os_name=os_name, arch=arch)
                self.assertEqual(result.returncode, 1)
                self.assertIn(f"unsupported runner platform {os_name}/{arch}", result.stdout)
                self.assertIn("install: path", result.stdout)
                self.assertEqual(output, "")
        self.assertEqual(self.server.hits, {})

    def test_an_action_without_pins_fails_clearly(self):
        result, _ = self.run_install(AB_VERSION="", AB_SHA256_X86_64="")
        self.assertEqual(result.returncode, 1)
        self.assertIn("pins no release binary", result.stdout)
        self.assertEqual(self.server.hits, {})

    def test_missing_asset_fails_clearly(self):
        (self.tmp / "releases" / VERSION / X86).unlink()
        result, _ = self.run_install()
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"could not download {self.server.url}/{VERSION}/{X86}", result.stdout)
        self.assertFalse(self.cached().exists())

    def test_plain_http_to_another_host_is_refused(self):
        result, _ = self.run_install(AB_RELEASE_BASE_URL="http://example.com/releases")
        self.assertEqual(result.returncode, 1)
        self.assertIn("must be https://", result.stdout)

    def run_fetch(self, install: str, binary: str, path: str, **overrides):
        fetch = step(self.action, "fetch")
        env = {
            "PATH": path,
            "AB_BROKER_URL": "https://broker.example", "AB_AUDIENCE": "https://github.com/ourorg",
            "AB_ROLE": "deploy", "AB_DURATION_SECONDS": "", "AB_CA_FILE": "", "AB_JOB_ID": "42",
            "AB_MODE": "github-output", "AB_INSTALL": install, "AB_BINARY": binary,
            "AB_REGION": "eu-west-1", "AB_MASK_ACCESS_KEY_ID": "true", "AB_RETRY_MAX_SECONDS": "",
            "AB_PERMISSIONS": "",
        }
        env.update(overrides)
        self.assertEqual(set(env) - {"PATH"}, set(fetch["env"]), "the fetch step's env changed; update this test")
        return subprocess.run(["bash", "-e", "-c", fetch["run"]], env=env,
                              capture_output=True, text=True, check=False, timeout=60)

    def test_fetch_step_runs_the_installed_binary(self):
        installed, _ = self.run_install()
        self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
        result = self.run_fetch("release", str(self.cached()), "/usr/bin:/bin")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"fake-broker {self.cached()}", result.stdout)
        self.assertIn("arg: fetch\narg: --broker-url\narg: https://broker.example\n", result.stdout)
        self.assertIn("arg: --github-output", result.stdout)
        self.assertIn("arg: --region\narg: eu-west-1\n", result.stdout)
        self.assertIn("arg: --mask-access-key-id\n", result.stdout)
        self.assertNotIn("--retry-max-seconds", result.stdout)
        self.assertNotIn("--permission", result.stdout)

    def test_permissions_become_one_flag_each(self):
        installed, _ = self.run_install()
        self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
        result = self.run_fetch("release", str(self.cached()), "/usr/bin:/bin",
                                AB_ROLE="release-notes", AB_REGION="", AB_MASK_ACCESS_KEY_ID="false",
                                AB_PERMISSIONS=" contents=write,pull_requests=read  checks=read ")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("arg: --permission\narg: contents=write\n"
                      "arg: --permission\narg: pull_requests=read\n"
                      "arg: --permission\narg: checks=read\n", result.stdout)
        self.assertEqual(result.stdout.count("--permission"), 3)

    def test_github_token_outputs_come_from_the_fetch_step(self):
        outputs = self.action["outputs"]
        for name in ("token", "expires-at", "revoke-at"):
            self.assertEqual(outputs[name]["value"], f"${{{{ steps.fetch.outputs.{name} }}}}")
        self.assertEqual(outputs["binary"]["value"],
                         "${{ steps.install.outputs.path || 'attestation-broker' }}")

    def test_install_path_without_a_binary_on_path_fails_clearly(self):
        result = self.run_fetch("path", "", "/usr/bin:/bin")
        self.assertEqual(result.returncode, 127)
        self.assertIn("not on PATH", result.stdout)

    def test_install_path_uses_the_binary_on_path(self):
        bindir = self.tmp / "bin"
        bindir.mkdir()
        (bindir / "attestation-broker").write_bytes(FAKE_BINARY)
        (bindir / "attestation-broker").chmod(0o755)
        result = self.run_fetch("path", "", f"{bindir}:/usr/bin:/bin")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"fake-broker {bindir}/attestation-broker", result.stdout)


if __name__ == "__main__":
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(ActionInstallTest)
    outcome = unittest.TextTestRunner(verbosity=1).run(suite)
    sys.exit(0 if outcome.wasSuccessful() else 1)
