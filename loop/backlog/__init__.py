"""The ideas backlog (autoresearch.ideas.md) and the daemon's bookkeeping in it.
"""
