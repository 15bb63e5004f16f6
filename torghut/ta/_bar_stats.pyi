"""Type stubs of the compiled bar aggregate (``torghut/ta/_bar_stats.pyx``)."""

from torghut.ta.microbars import Tick

def bar_stats(ticks: set[Tick]) -> tuple[float, float, float, float, float, float, int]: ...
