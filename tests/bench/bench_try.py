"""What the Try tab costs: starting the Try process and loading the base once, attaching an
adapter, switching between adapters (set_adapter, no reload) and generating.

    PYTHONPATH=.devpath python tests/bench/bench_try.py

Builds a tiny Llama (the demo size) and two adapters with non-zero B in a temporary folder;
prints one JSON line at the end.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: try_models


def main() -> None:
    from graftlab.core.adapter.playground import Playground
    from graftlab.core.model.demo import DEMO_MODELS, save_tiny_model
    from graftlab.core.process.try_child import TryProcess
    from try_models import make_adapter

    root = Path(tempfile.mkdtemp(prefix="bench-try-"))
    base = save_tiny_model("llama", root / "base", size=DEMO_MODELS["tiny-llama"]["size"])
    one, two = make_adapter(base, root / "one", 1), make_adapter(base, root / "two", 2)
    out: dict[str, float | int] = {}

    proc = TryProcess()
    start = time.perf_counter()
    info = proc.call("load", base=str(base))
    out["child_start_and_load_s"] = time.perf_counter() - start
    out["base_load_s"] = info["load_s"]
    out["attach_first_s"] = proc.call("attach", dir=str(one))["attach_s"]
    out["attach_second_s"] = proc.call("attach", dir=str(two))["attach_s"]
    start = time.perf_counter()
    result = proc.call("generate", prompt="the cat sees", sides=["base", "one", "two"],
                       options={"max_new_tokens": 32})
    out["generate_3_sides_32_tokens_s"] = time.perf_counter() - start
    out["tokens_per_s_base"] = result["tokens"]["base"] / result["seconds"]["base"]
    out["base_loads"] = proc.call("info")["base_loads"]
    proc.close()

    pg = Playground(str(base))
    pg.attach(one)
    pg.attach(two)
    n = 200
    start = time.perf_counter()
    for i in range(n):
        with pg.side("one" if i % 2 else "two"):
            pass
    out["switch_adapter_ms"] = 1000 * (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        with pg.side("base"):
            pass
    out["switch_to_base_ms"] = 1000 * (time.perf_counter() - start) / n
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
