"""Records what a provider binary answers to the transcript's requests (tests/providers/cases.py):

    python -m tests.providers.record {command,tls} BINARY SOURCE

BINARY is upstream's plugin built from its public source, SOURCE says which (release and how it
was built); the transcript goes to tests/providers/transcripts/<provider>.json, where
test_transcripts.py replays it to this project's build.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.providers.cases import PROVIDERS, transcript_path
from tests.providers.harness import run_steps, write_transcript


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.providers.record", description=__doc__)
    parser.add_argument("provider", choices=sorted(PROVIDERS))
    parser.add_argument("binary", type=Path)
    parser.add_argument("source", help="which upstream build answered, e.g. its tag and how it was built")
    args = parser.parse_args(argv)
    provider = PROVIDERS[args.provider]
    with tempfile.TemporaryDirectory() as scratch, provider.live_values(Path(scratch)) as placeholders:
        exchanges = run_steps(args.binary.resolve(), provider.steps(), placeholders, provider.normalise)
    write_transcript(
        transcript_path(args.provider), {"provider": args.provider, "recorded_from": args.source}, exchanges
    )
    print(f"{len(exchanges)} exchanges written to {transcript_path(args.provider)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
