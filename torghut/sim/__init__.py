"""Alpaca-compatible simulators: the market-data websocket and the paper broker.

Alpaca cannot be reached from development and CI machines, so these speak Alpaca's documented
protocols closely enough that alpaca-py works against them unchanged.
"""
