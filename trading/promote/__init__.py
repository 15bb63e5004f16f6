"""Promotion gates: from a backtest run (and the paper record) to a verdict live mode requires.

* ``subject`` — what is promoted: strategy versions + parameters + prompt version, hashed;
* ``policy`` — the TOML policy and its pure evaluation (every failed reason);
* ``evidence`` — gathering the run, the baseline and the paper record from the store;
* ``records`` — ``promotion_signoffs`` and ``promotion_verdicts``;
* ``gate`` — the live flow's question: is this exact subject promoted?
* ``__main__`` — ``python -m trading.promote check|sign-off``.
"""
