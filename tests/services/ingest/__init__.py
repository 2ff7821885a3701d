"""Tests of the ingest node."""
