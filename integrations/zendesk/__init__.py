"""Zendesk Support: the helpdesk adapter (zenpy) and its webhooks."""
