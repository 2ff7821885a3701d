"""Tests of facemask.core."""
