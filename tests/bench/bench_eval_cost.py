"""What samples during training and the base model's scores cost, as a share of training time.

Run: python tests/bench/bench_eval_cost.py [--steps 60]
Trains the demo Llama on the demo stories with an eval split of 10 %, `training.sample_prompts`
(3 prompts) every 10 steps and `training.base_eval: on`, in this process, and reads the seconds
the session spent on each (TrainingSession.costs: base_eval, eval, samples and train, the last
being all active training time, extras included). Final JSON line with the shares.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from graftlab.core.config import RunConfig
    from graftlab.core.train.session import TrainingSession

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig.from_dict({
            "model": {"source": "demo:tiny-llama"},
            "adapter": {"targets": ["*.q_proj", "*.v_proj"]},
            "data": {"path": "demo:stories", "eval_fraction": 0.1},
            "training": {"max_steps": args.steps, "batch_size": 4, "eval_steps": 20,
                         "sample_prompts": ["Once upon a time", "The cat", "Tom said"],
                         "sample_every": 10, "base_eval": "on", "output_dir": tmp + "/run"}})
        session = TrainingSession(cfg)
        session.run()
        costs = session.costs
    train = costs.get("train") or 1.0
    shares = {k: round(100.0 * v / train, 2) for k, v in costs.items() if k != "train"}
    print(json.dumps({"bench": "eval_cost", "steps": args.steps,
                      "seconds": {k: round(v, 3) for k, v in costs.items()},
                      "share_of_training_pct": shares,
                      "samples_within_5pct": shares.get("samples", 0.0) <= 5.0}))


if __name__ == "__main__":
    main()
