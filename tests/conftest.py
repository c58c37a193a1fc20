"""Shared test configuration: hypothesis profiles (derandomised in CI), and Ctrl-C
delivered whatever shell started the suite."""

from __future__ import annotations

import os
import signal

from hypothesis import HealthCheck, settings

# A shell that starts the suite in the background (``nohup``, ``&`` without job
# control) ignores SIGINT in it, and every process started from it inherits that:
# the tests of Ctrl-C (in this process and in the children it starts) need it
# delivered, as it is from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# XLA's algebraic simplifier aborts the process on some small lhs-dilated
# convolutions (see dilconv.cli.verify.XLA_WORKAROUND); set before JAX is imported.
if "xla_disable_hlo_passes" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_disable_hlo_passes=algsimp"
    ).strip()

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# the native modules' second pass in checked mode (tools/run_tests.py)
settings.register_profile(
    "checked",
    derandomize=True,
    max_examples=10,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "dev",
    max_examples=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
