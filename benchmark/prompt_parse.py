"""Parse time of the worst prompts the validator accepts (docs/RELIABILITY.md quotes it).

Each case is at the limits of ``diffexp.prompts.weighting`` (``MAX_NESTING`` levels,
``MAX_WEIGHTED_CHARS`` characters): the deepest nesting, as many nested groups as fit, and the
longest text with one group. Every case is parsed by compel's parser (what sampling and the
validator run), a fresh string each time (no cache), median of ``--repeats``.

    python benchmark/prompt_parse.py [--repeats 7] [--out benchmark/results/prompt_parse_cpu.txt]
"""

from __future__ import annotations

import argparse
import statistics
import time

from diffexp.prompts.weighting import MAX_NESTING, MAX_WEIGHTED_CHARS, _parsed_fragments, validate


def cases() -> dict[str, str]:
    d = MAX_NESTING
    deep = "a " + "(" * d + "red cat" + ")1.1" * d
    group = "(" * d + "w" + ")" * d + " "
    many = (group * (MAX_WEIGHTED_CHARS // len(group)))[:MAX_WEIGHTED_CHARS].rsplit(" ", 1)[0]
    words = ("word " * (MAX_WEIGHTED_CHARS // 5))[: MAX_WEIGHTED_CHARS - 10].strip() + " (red)1.2"
    return {"deepest nesting": deep, "nested groups up to the length limit": many, "longest text, one group": words}


def parse_seconds(prompt: str, repeats: int) -> float:
    times = []
    for i in range(repeats):
        fresh = f"{prompt[:-1]}{prompt[-1]}" + " " * (i % 2)  # a new string: the parse cache is by value
        fresh = fresh if i % 2 == 0 else fresh.rstrip() + " x"
        validate(fresh)
        _parsed_fragments.cache_clear()
        start = time.perf_counter()
        _parsed_fragments(fresh)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out")
    args = p.parse_args()
    lines = [f"limits: nesting {MAX_NESTING} levels, {MAX_WEIGHTED_CHARS} characters with weighting syntax"]
    for name, prompt in cases().items():
        lines.append(f"{name} ({len(prompt)} chars): median {1000 * parse_seconds(prompt, args.repeats):.1f} ms")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
