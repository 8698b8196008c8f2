"""Judging a measured run: the whole keep rule (validity, noise, protocol, verification).
"""
