"""`deskbridge worker`, with the recording helpdesk test double in place of the real adapter.

Usage: python -m tests.support.worker_with_double CONFIG RECORD_FILE [before|after]
The optional last word makes the double hang before or after its write, so a test can kill
this process at that point.
"""

from __future__ import annotations

import sys
from pathlib import Path

from integrations.cli import load
from integrations.runtime import Runtime, run_worker
from tests.doubles import RecordingHelpdesk


def main(argv: list[str]) -> None:
    config, record, *hang = argv
    settings = load(config)
    helpdesk = RecordingHelpdesk("hd", Path(record), hang=hang[0] if hang else None)
    run_worker(Runtime(settings, helpdesks={"hd": helpdesk}), workers=1)


if __name__ == "__main__":
    main(sys.argv[1:])
