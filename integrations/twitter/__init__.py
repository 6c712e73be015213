"""X (Twitter): webhooks, polling, replies and DMs."""
