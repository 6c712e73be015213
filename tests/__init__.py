"""Tests of deskbridge, mirroring the layout of `integrations/`."""
