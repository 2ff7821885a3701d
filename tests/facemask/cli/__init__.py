"""Tests of facemask.cli."""
