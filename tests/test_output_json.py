"""output.dumps: the text of json.dumps(indent=2, sort_keys=True, default=str)."""

import json
import math
import random

import numpy as np

from pipeline.sink import output

SCALARS = [
    0, -1, 2**70, -(2**63), 1.5, -0.0, 0.0, 1e300, 5e-324, math.nan, math.inf,
    -math.inf, 0.1 + 0.2, True, False, None, "", "a, b", 'q"uote\\', "Zürich\n\x00",
    "\u2028€", np.int64(7), np.float64(2.5), np.float32(0.1), b"bytes",
]


def _value(rng, depth):
    kind = rng.random()
    if depth > 4 or kind < 0.3:
        return rng.choice(SCALARS)
    if kind < 0.45:  # a number list (histogram counts, quantiles)
        n = rng.randrange(0, 50)
        return [rng.choice([rng.randrange(-5, 10**6), rng.uniform(-1e6, 1e6)])
                for _ in range(n)]
    if kind < 0.75:
        items = [_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
        return tuple(items) if rng.random() < 0.1 else items
    return {f"k{rng.randrange(100)}": _value(rng, depth + 1)
            for _ in range(rng.randrange(0, 5))}


def test_dumps_matches_json_dumps_on_random_values():
    rng = random.Random(21)
    for _ in range(2000):
        value = _value(rng, 0)
        expected = json.dumps(value, indent=2, sort_keys=True, default=str)
        assert output.dumps(value) == expected


def test_dumps_matches_on_statistics_shapes():
    value = {
        "train": {"raw": {"rows": 3, "features": {"t": {
            "top": [["a, b", 2], ["Zürich", 1]],
            "token_counts": [["x", 1], ["", 0]],
            "quantiles": [0.0, -0.0, 1e-7, math.nan, 12345678901234567890],
            "histogram": {"counts": list(range(1024)), "k": None, "lo": -4},
            "nested": [[1, [2.5, []]], [], [True, None, 1]],
        }}}},
        "eval": [],
        "mixed": [1, 2.0, np.int64(3)],
    }
    expected = json.dumps(value, indent=2, sort_keys=True, default=str)
    assert output.dumps(value) == expected
    for top in ([1, 2, 3], [], [["a", 1]], 5, "s", None):
        assert output.dumps(top) == json.dumps(top, indent=2, sort_keys=True)
