"""Every random draw in the tests follows D4RT_TEST_SEED (tests/conftest.py), so a failure printed with its seed
reproduces: no generator is created from fresh OS entropy."""

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
UNSEEDED = re.compile(r"default_rng\(\s*\)|random\.Random\(\s*\)|SystemRandom\(|SeedSequence\(\s*\)")


def test_no_test_draws_from_an_unseeded_generator():
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(TESTS.glob("*.py"))
        if path.name != "conftest.py"  # the one place that draws the seed itself
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if UNSEEDED.search(line) and path.name != Path(__file__).name
    ]
    assert not offenders, "seed these from np.random.randint(2**31) (seeded per test by conftest):\n" + "\n".join(
        offenders
    )
