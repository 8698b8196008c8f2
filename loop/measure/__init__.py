"""Measuring one run: the benchmark's environment, the child process and its timeout,
the watchdog, and the one parse of its log.
"""
