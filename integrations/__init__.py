"""deskbridge: answer customers on social channels from the helpdesk a company already runs."""
