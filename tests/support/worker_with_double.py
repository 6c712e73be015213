"""`deskbridge worker`, with the recording helpdesk test double in place of the real adapter.

Usage: python -m tests.support.worker_with_double CONFIG RECORD_FILE [before|after] [refuse]
The optional word before/after makes the double hang before or after its write, so a test
can kill this process at that point; `refuse` makes it refuse its first write as Zendesk
refuses a comment body it will not take (422), so the message goes in a safe form.
"""

from __future__ import annotations

import sys
from pathlib import Path

from integrations.cli import load
from integrations.errors import ProviderError
from integrations.runtime import Runtime, run_worker
from tests.doubles import TextRecordingHelpdesk


def main(argv: list[str]) -> None:
    config, record, *words = argv
    settings = load(config)
    hang = next((w for w in words if w in ("before", "after")), None)
    refusals = [ProviderError("zendesk", "RecordInvalid; Comment: Body is invalid", status=422)]
    helpdesk = TextRecordingHelpdesk("hd", Path(record), hang=hang,
                                     failures=refusals if "refuse" in words else [])
    run_worker(Runtime(settings, helpdesks={"hd": helpdesk}), workers=1)


if __name__ == "__main__":
    main(sys.argv[1:])
