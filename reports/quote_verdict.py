"""Quote a profile's verdict in the README: ``make demo`` runs this after ``diffexp ablation``.

The library writes only the report (``reports/embedded[-<profile>]/verdict.md``); copying its
verdict into the checkout's README is the checkout's business, so it lives here.
    python reports/quote_verdict.py --profile default
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: the profiles whose verdict the README quotes (quick is a smoke test)
QUOTED_PROFILES = ("default", "full")


def report_dir(profile: str) -> Path:
    from diffexp.embedded.ablation import report_dir as library_report_dir

    return ROOT / library_report_dir(profile)


def readme_markers(profile: str = "default") -> tuple[str, str]:
    """The comments around the README's quote of a profile's verdict."""
    if profile == "default":
        return (
            "<!-- verdict: written by `make demo` from reports/embedded/verdict.md; do not edit by hand -->",
            "<!-- end of verdict -->",
        )
    source = f"reports/embedded-{profile}/verdict.md"
    return (
        f"<!-- {profile} verdict: written by `make demo PROFILE={profile}` from {source}; do not edit by hand -->",
        f"<!-- end of the {profile} verdict -->",
    )


def update_readme(readme: Path, verdict: str, profile: str = "default") -> bool:
    """Replace the README's block quoting ``profile``'s verdict with ``verdict``.
    Returns whether the file changed; a README without the block is left alone."""
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    opening, closing = readme_markers(profile)
    start, end = text.find(opening), text.find(closing)
    if start < 0 or end < start:
        return False
    new = text[: start + len(opening)] + "\n" + verdict + text[end:]
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    if args.profile not in QUOTED_PROFILES:
        return 0
    verdict = report_dir(args.profile) / "verdict.md"
    if not verdict.is_file():
        print(f"quote_verdict: no verdict at {verdict}: run `make demo PROFILE={args.profile}`", file=sys.stderr)
        return 2
    if update_readme(args.readme, verdict.read_text(encoding="utf-8"), args.profile):
        print(f"updated the verdict quoted in {args.readme.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
