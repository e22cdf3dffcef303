"""Reliability tests: bad and hostile input, crashes and concurrency."""
