"""Metric series kept as plain numbers, exposed to a ``CollectorRegistry`` as collectors.

Why not prometheus_client's metric objects: each update of one of their children takes a lock
and runs several checks and method calls, ~0.6 µs, and one exchange makes about twenty. Here a
counter is one float attribute, a histogram a list of bucket counts and a sum, so an update is an
attribute increment. A ``Family`` is an ordinary custom collector: ``registry.collect()``,
``get_sample_value`` and prometheus_client's encoders see the same families, names, labels,
``_created`` samples and exemplars its own objects would produce, and ``rendering.py`` reads the
series directly (``_child_samples``, as it does a prometheus_client child).

No lock, on purpose: every update happens on the event loop's thread, and so does every read of
a scrape (``exposition.py`` renders on the loop, between relays). Reading one float attribute is
atomic under the GIL, and ``collect`` copies a family's series before it walks them, so a series
created while a scrape runs is simply not in it. The few updates made from other threads (a log
writer on a broken stdout, the OpenTelemetry exporter's drop callback) hold ``Metrics``' lock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from math import inf
from time import time  # noqa: TID251 - Unix timestamps of the exposition (_created, exemplars)
from typing import cast

import prometheus_client.metrics as prometheus_metrics
from prometheus_client import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

_go_float = cast(Callable[[float], str], floatToGoString)  # the library's, untyped

__all__ = ["PREFIXES_SLOT", "CounterSeries", "Family", "GaugeSeries", "HistogramSeries", "Series"]

# Where the renderer keeps each series' formatted line prefixes (``rendering.py``): a slot, so
# a series stays one small object, and the prefixes live exactly as long as it does.
PREFIXES_SLOT = "_sidecar_line_prefixes"


def _use_created() -> bool:
    """prometheus_client's switch (``PROMETHEUS_DISABLE_CREATED_SERIES``), read per scrape."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


class CounterSeries:
    """One counter series: a float that only goes up, and when it was created."""

    __slots__ = (PREFIXES_SLOT, "created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:  # as prometheus_client: a counter never goes down
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount

    def _child_samples(self) -> tuple[Sample, ...]:
        total = Sample("_total", {}, self.value, None, None)
        if _use_created():
            return total, Sample("_created", {}, self.created, None, None)
        return (total,)


class GaugeSeries:
    """One gauge series: a float."""

    __slots__ = (PREFIXES_SLOT, "value")

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)

    def _child_samples(self) -> tuple[Sample, ...]:
        return (Sample("", {}, self.value, None, None),)


class HistogramSeries:
    """One histogram series: a count per bucket (not cumulative), the sum, and optionally the
    last exemplar of each bucket as ``(labels, value, unix time)``."""

    __slots__ = (PREFIXES_SLOT, "bounds", "counts", "created", "exemplars", "sum")

    def __init__(self, bounds: tuple[float, ...], exemplars: bool) -> None:
        self.bounds = bounds  # ends with +Inf; shared by every series of the family
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time()
        self.exemplars: list[tuple[Mapping[str, str], float, float] | None] | None = (
            [None] * len(bounds) if exemplars else None
        )

    def observe(self, amount: float, exemplar: Mapping[str, str] | None = None) -> None:
        """As prometheus_client: the first bucket whose bound is ≥ amount (none for NaN)."""
        self.sum += amount
        i = bisect_left(self.bounds, amount)
        if amount <= self.bounds[i]:  # False only for NaN (bisect_left gives 0)
            self.counts[i] += 1
            if exemplar is not None and self.exemplars is not None:
                self.exemplars[i] = (exemplar, amount, time())

    def _child_samples(self) -> tuple[Sample, ...]:
        samples = []
        acc = 0.0
        exemplars = self.exemplars
        for i, bound in enumerate(self.bounds):
            acc += self.counts[i]
            kept = exemplars[i] if exemplars is not None else None
            exemplar = None if kept is None else Exemplar(dict(kept[0]), kept[1], kept[2])
            samples.append(Sample("_bucket", {"le": _go_float(bound)}, acc, None, exemplar))
        samples.append(Sample("_count", {}, acc, None, None))
        if self.bounds[0] >= 0:
            samples.append(Sample("_sum", {}, self.sum, None, None))
        if _use_created():
            samples.append(Sample("_created", {}, self.created, None, None))
        return tuple(samples)


Series = CounterSeries | GaugeSeries | HistogramSeries


class Family(Collector):
    """One metric family: its series by label values. Registered like any custom collector."""

    def __init__(
        self,
        name: str,
        kind: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...] = (),
        exemplars: bool = False,
    ) -> None:
        if kind not in ("counter", "gauge", "histogram"):
            raise ValueError(f"metric kind {kind!r}: counter, gauge or histogram")
        # As prometheus_client's Counter: the family is named without "_total".
        self.name = name.removesuffix("_total") if kind == "counter" else name
        self.kind = kind
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = (*buckets, inf) if buckets and buckets[-1] != inf else tuple(buckets)
        self.exemplars = exemplars
        self.series: dict[tuple[str, ...], Series] = {}
        if not labelnames:  # an unlabelled metric exists at zero from the start
            self.labels(())

    def labels(self, values: tuple[str, ...]) -> Series:
        """The series for ``values``, created at zero on first use."""
        series = self.series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected")
            series = self.series[values] = self._new()
        return series

    def _new(self) -> Series:
        if self.kind == "counter":
            return CounterSeries()
        if self.kind == "gauge":
            return GaugeSeries()
        return HistogramSeries(self.bounds, self.exemplars)

    def describe(self) -> list[Metric]:
        """The family without samples: the registry learns its names without collecting."""
        return [Metric(self.name, self.documentation, self.kind)]

    def collect(self) -> list[Metric]:
        metric = Metric(self.name, self.documentation, self.kind)
        for values, series in list(self.series.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            for s in series._child_samples():
                metric.add_sample(
                    self.name + s.name, {**labels, **s.labels}, s.value, s.timestamp, s.exemplar
                )
        return [metric]
