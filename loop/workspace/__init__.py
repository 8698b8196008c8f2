"""Collaboration workspace (SPEC section 10): several daemons, one shared board.

`storage` (the interface), `dirstore` and `hfbucket` (the backends), `board` (the layout and
naming conventions, posts, results, plausibility, leaderboard), `settings` (opening the
storage the `workspace:` setting names; the section itself is loop/settings/workspace.py),
`lease` (claims that expire, the renewal thread), `records` (results JSON), `hook` (the
scheduler's hooks) and `cli` (`autogolf workspace init|status`).
"""
