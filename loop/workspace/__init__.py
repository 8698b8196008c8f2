"""Collaboration workspace (SPEC section 10): several daemons, one shared board.

`storage` (the interface), `dirstore` and `hfbucket` (the backends), `board` (the layout and
naming conventions, posts, results, leaderboard), `settings` (the `workspace:` config
section), `daemon` (the scheduler's hooks) and `cli` (`autogolf workspace init|status`).
"""
