"""Tests of mathlib, run by the `test` step of blueprints/ci.yaml."""

import unittest

from mathlib.stats import mean, spread
from mathlib.text import shout


class MathlibTest(unittest.TestCase):
    def test_mean(self) -> None:
        self.assertEqual(mean([1, 2, 3]), 2)

    def test_spread(self) -> None:
        self.assertEqual(spread([4, 1, 9]), 8)

    def test_shout(self) -> None:
        self.assertEqual(shout("hi"), "HI!")


if __name__ == "__main__":
    unittest.main()
