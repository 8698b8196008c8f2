"""The unattended loop: the scheduler that wires one experiment (ask -> run -> tell),
the session and its resume, stop rules, the lock, and the events it emits.
"""
