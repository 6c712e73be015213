"""Salesforce Service Cloud: the helpdesk adapter (simple-salesforce) and Outbound Messages."""
