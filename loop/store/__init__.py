"""Storing results: the append-only ledger, its row schema and views, git, atomic files.
"""
