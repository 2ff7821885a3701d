"""Tests of facemask.commands."""
