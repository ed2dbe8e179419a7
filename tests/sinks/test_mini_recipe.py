"""The miniature's table recipe renders the claims and the Table 5.8 analogue from collected CSVs."""

import pandas as pd

from thesis import results as pipeline


def test_recipe_renders_claims_and_masking_table(tmp_path):
    folder = tmp_path / "sinks_mini"
    folder.mkdir()
    pd.DataFrame([{"experiment": "sinks_mini", "run": r, "claim": "C5_arm_A", "statement": "s", "value": v,
                   "direction": ">=", "threshold": 0.5, "passed": v >= 0.5} for r, v in (("a", 0.9), ("b", 0.7))]
                 ).to_csv(folder / "claims.csv", index=False)
    pd.DataFrame([{"experiment": "sinks_mini", "run": r, "model": "arm", "topk": k, "task": "A", "hits": h, "n": 100}
                  for r in ("a", "b") for k, h in ((0, 80), (1, 10))]).to_csv(folder / "accuracy.csv", index=False)
    (path,) = pipeline.recipes()["sinks_mini_claims"].render(tmp_path)
    text = path.read_text()
    assert "C5_arm_A" in text and "reproduced" in text and "2/2" in text
    assert "| A | unmasked | 0.80 ± 0.03 |" in text and "| A | masked top-1 | 0.10 ± 0.02 |" in text
